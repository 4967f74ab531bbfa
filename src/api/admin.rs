//! The `creditgate.v1.Admin` service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{self, money};
use super::request::{
    AlertsChange, LimitRequest, Listing, PricesRequest, ReconcileScope, WalletChange,
};
use super::{principal, status};
use crate::gate::{Gate, GrantRequest, UsageRequest, VoidRequest};
use crate::policy::{Operation, Policy};
use crate::proto::{self, admin_server};
use crate::reconcile::Reconciler;
use crate::store::AccountUpdate;

/// Serves the admin side of [`Gate`] over gRPC.
#[derive(Clone)]
pub struct AdminService {
    gate: Arc<Gate>,
    reconciler: Arc<Reconciler>,
    policy: Arc<Policy>,
}

impl AdminService {
    pub fn new(gate: Arc<Gate>, reconciler: Arc<Reconciler>, policy: Arc<Policy>) -> AdminService {
        AdminService {
            gate,
            reconciler,
            policy,
        }
    }

    pub fn into_server(self) -> admin_server::AdminServer<AdminService> {
        admin_server::AdminServer::new(self)
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn catalog_to_proto(catalog: &crate::catalog::Catalog) -> proto::PriceCatalog {
    proto::PriceCatalog {
        features: catalog
            .iter()
            .map(convert::feature_price_to_proto)
            .collect(),
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn put_account(
        &self,
        request: Request<proto::PutAccountRequest>,
    ) -> Reply<proto::Account> {
        let caller = principal(&self.policy, &request, Operation::PutAccount)?;
        let update = AccountUpdate::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&update.id).map_err(status)?;
        let account = self.gate.put_account(update).await.map_err(status)?;
        Ok(Response::new(convert::account_to_proto(&account)))
    }

    async fn get_account(
        &self,
        request: Request<proto::GetAccountRequest>,
    ) -> Reply<proto::Account> {
        let caller = principal(&self.policy, &request, Operation::GetAccount)?;
        let id = convert::account(&request.get_ref().account_id).map_err(status)?;
        caller.may_touch(&id).map_err(status)?;
        let account = self.gate.account(&id).await.map_err(status)?;
        Ok(Response::new(convert::account_to_proto(&account)))
    }

    async fn add_grant(
        &self,
        request: Request<proto::AddGrantRequest>,
    ) -> Reply<proto::AddGrantResponse> {
        let caller = principal(&self.policy, &request, Operation::AddGrant)?;
        let request = GrantRequest::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&request.account).map_err(status)?;
        let receipt = self.gate.add_grant(request).await.map_err(status)?;
        Ok(Response::new(proto::AddGrantResponse {
            wallet: receipt.grant.terms.wallet.to_string(),
            grant: Some(convert::grant(&receipt.grant, receipt.now_ms)),
            created: receipt.created,
            available: money(receipt.available_minor),
        }))
    }

    async fn void_grant(
        &self,
        request: Request<proto::VoidGrantRequest>,
    ) -> Reply<proto::VoidGrantResponse> {
        let caller = principal(&self.policy, &request, Operation::VoidGrant)?;
        let request = VoidRequest::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&request.account).map_err(status)?;
        let receipt = self.gate.void_grant(request).await.map_err(status)?;
        let at = receipt.grant.voided_at_ms.unwrap_or(0);
        Ok(Response::new(proto::VoidGrantResponse {
            grant: Some(convert::grant(&receipt.grant, at)),
            voided: money(receipt.voided_minor),
            available: money(receipt.available_minor),
        }))
    }

    async fn set_wallet(
        &self,
        request: Request<proto::SetWalletRequest>,
    ) -> Reply<proto::WalletBalance> {
        let caller = principal(&self.policy, &request, Operation::SetWallet)?;
        let change = WalletChange::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&change.account).map_err(status)?;
        let (view, now_ms) = self
            .gate
            .set_wallet(change.account, change.wallet, change.flex_cap)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::wallet_balance(&view, now_ms)))
    }

    async fn set_alerts(
        &self,
        request: Request<proto::SetAlertsRequest>,
    ) -> Reply<proto::WalletAlerts> {
        let caller = principal(&self.policy, &request, Operation::SetAlerts)?;
        let change = AlertsChange::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&change.account).map_err(status)?;
        let view = self
            .gate
            .set_alerts(change.account, change.wallet, change.alerts)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::wallet_alerts(&view)))
    }

    async fn set_limit(
        &self,
        request: Request<proto::SetLimitRequest>,
    ) -> Reply<proto::SpendLimits> {
        let caller = principal(&self.policy, &request, Operation::SetLimit)?;
        let LimitRequest { account, change } =
            LimitRequest::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&account).map_err(status)?;
        let limits = self
            .gate
            .set_limit(&account, change)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::SpendLimits {
            account_id: account.to_string(),
            limits: limits.iter().map(convert::spend_limit).collect(),
        }))
    }

    async fn set_prices(
        &self,
        request: Request<proto::SetPricesRequest>,
    ) -> Reply<proto::PriceCatalog> {
        principal(&self.policy, &request, Operation::SetPrices)?;
        let PricesRequest(prices) = PricesRequest::try_from(request.get_ref()).map_err(status)?;
        let catalog = self.gate.set_prices(prices).await.map_err(status)?;
        Ok(Response::new(catalog_to_proto(&catalog)))
    }

    async fn get_prices(
        &self,
        request: Request<proto::GetPricesRequest>,
    ) -> Reply<proto::PriceCatalog> {
        principal(&self.policy, &request, Operation::GetPrices)?;
        Ok(Response::new(catalog_to_proto(&self.gate.prices())))
    }

    async fn get_usage(
        &self,
        request: Request<proto::GetUsageRequest>,
    ) -> Reply<proto::GetUsageResponse> {
        let caller = principal(&self.policy, &request, Operation::GetUsage)?;
        let request = UsageRequest::try_from(request.get_ref()).map_err(status)?;
        let account = request.account.clone();
        caller.may_touch(&account).map_err(status)?;
        let usage = self.gate.usage(request).await.map_err(status)?;
        Ok(Response::new(proto::GetUsageResponse {
            account_id: account.to_string(),
            since_ms: usage.since_ms,
            until_ms: usage.until_ms,
            total: money(usage.total.amount_minor),
            count: usage.total.count as u64,
            groups: usage
                .groups
                .iter()
                .map(|g| proto::UsageGroup {
                    key: g.key.clone().unwrap_or_default(),
                    amount: money(g.amount_minor),
                    count: g.count as u64,
                })
                .collect(),
        }))
    }

    async fn reconcile(
        &self,
        request: Request<proto::ReconcileRequest>,
    ) -> Reply<proto::ReconcileResponse> {
        let caller = principal(&self.policy, &request, Operation::Reconcile)?;
        let ReconcileScope {
            only,
            after,
            limit,
            rebuild,
        } = ReconcileScope::try_from(request.get_ref()).map_err(status)?;
        let named = only.is_some();
        match &only {
            Some(account) => caller.may_touch(account),
            None => caller.may_touch_all(),
        }
        .map_err(status)?;
        let accounts = match only {
            Some(account) => vec![account],
            None => self
                .gate
                .accounts(after.as_ref(), limit)
                .await
                .map_err(status)?,
        };
        let mut reports = Vec::with_capacity(accounts.len());
        for account in &accounts {
            let comparison = self
                .reconciler
                .compare(account, rebuild)
                .await
                .map_err(status)?;
            reports.push(convert::reconcile_report(account, &comparison));
        }
        let next = if !named && accounts.len() == limit {
            accounts.last().map(|a| a.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ReconcileResponse {
            accounts: reports,
            next_after_account_id: next,
        }))
    }

    async fn list_entries(
        &self,
        request: Request<proto::ListEntriesRequest>,
    ) -> Reply<proto::ListEntriesResponse> {
        let caller = principal(&self.policy, &request, Operation::ListEntries)?;
        let Listing { account, limit } = Listing::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&account).map_err(status)?;
        let entries = self.gate.entries(&account, limit).await.map_err(status)?;
        Ok(Response::new(proto::ListEntriesResponse {
            entries: entries.iter().map(convert::entry).collect(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Reply<proto::ListEventsResponse> {
        let caller = principal(&self.policy, &request, Operation::ListEvents)?;
        let Listing { account, limit } = Listing::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&account).map_err(status)?;
        let events = self.gate.events(&account, limit).await.map_err(status)?;
        Ok(Response::new(proto::ListEventsResponse {
            events: events.iter().map(convert::event_record).collect(),
        }))
    }
}
