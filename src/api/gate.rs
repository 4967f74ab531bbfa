//! The `creditgate.v1.Gate` service.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::{self, money, split, verdict};
use super::{principal, status};
use crate::domain::Decision;
use crate::domain::{AccountId, FeatureId, WalletId};
use crate::events::Events;
use crate::gate::{self, CheckRequest, CommitRequest, ExtendRequest, Gate};
use crate::policy::{Operation, Policy};
use crate::proto::{self, gate_server};
use crate::shutdown::Shutdown;

/// Serves [`Gate`] over gRPC.
#[derive(Clone)]
pub struct GateService {
    gate: Arc<Gate>,
    events: Events,
    policy: Arc<Policy>,
    /// Ends `WatchBalance` streams when the server stops serving.
    shutdown: Shutdown,
}

/// Counts an open `WatchBalance` stream for the metrics while it lives.
struct Watching;

impl Watching {
    fn start() -> Watching {
        metrics::gauge!(crate::telemetry::WATCHERS).increment(1.0);
        Watching
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::WATCHERS).decrement(1.0);
    }
}

/// Events a `WatchBalance` stream has ready for its client before it waits for it.
const WATCH_QUEUE_LEN: usize = 64;

impl GateService {
    pub fn new(
        gate: Arc<Gate>,
        events: Events,
        policy: Arc<Policy>,
        shutdown: Shutdown,
    ) -> GateService {
        GateService {
            gate,
            events,
            policy,
            shutdown,
        }
    }

    /// An account's balances as GetBalance answers them.
    async fn balance(
        &self,
        account: &AccountId,
        only: Option<&WalletId>,
    ) -> Result<proto::GetBalanceResponse, Status> {
        let view = self.gate.balance(account).await.map_err(status)?;
        let wallets = view
            .wallets
            .iter()
            .filter(|w| only.is_none_or(|only| *only == w.wallet))
            .map(|w| convert::wallet_balance(w, view.now_ms))
            .collect();
        Ok(proto::GetBalanceResponse {
            account_id: account.to_string(),
            wallets,
            limits: view.limits.iter().map(convert::spend_limit).collect(),
        })
    }

    pub fn into_server(self) -> gate_server::GateServer<GateService> {
        gate_server::GateServer::new(self)
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl gate_server::Gate for GateService {
    async fn reserve(
        &self,
        request: Request<proto::ReserveRequest>,
    ) -> Reply<proto::ReserveResponse> {
        let caller = principal(&self.policy, &request, Operation::Reserve)?;
        let mut request = gate::ReserveRequest::try_from(request.get_ref()).map_err(status)?;
        request.idempotency_key = caller.scope(request.idempotency_key);
        caller.may_touch(&request.account).map_err(status)?;
        let account = request.account.clone();
        let (asked, wallet, decision) = self.gate.reserve(request).await.map_err(status)?;
        let v = verdict("reserve", &account, &decision, |h| h.available_minor);
        let mut response = proto::ReserveResponse {
            decision: v.decision,
            reason: v.reason,
            available: v.available,
            message: v.message,
            limit: v.limit,
            amount: money(asked),
            wallet: wallet.to_string(),
            ..Default::default()
        };
        if let Decision::Allowed(hold) = decision {
            response.reservation_id = hold.id.to_string();
            response.amount = money(hold.amount_minor);
            response.expires_at_ms = hold.expires_at_ms;
            response.split = split(&hold.split);
            response.wallet = hold.wallet.to_string();
        }
        Ok(Response::new(response))
    }

    async fn commit(&self, request: Request<proto::CommitRequest>) -> Reply<proto::CommitResponse> {
        let caller = principal(&self.policy, &request, Operation::Commit)?;
        let request = CommitRequest::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(request.id.account()).map_err(status)?;
        let receipt = self.gate.commit(request).await.map_err(status)?;
        Ok(Response::new(proto::CommitResponse {
            reservation_id: receipt.id.to_string(),
            charged: money(receipt.charged_minor),
            released: money(receipt.released_minor),
            split: split(&receipt.split),
            entry_id: receipt.entry_id,
            available: money(receipt.available_minor),
            requested: money(receipt.requested_minor),
            overrun: money(receipt.overrun_minor),
        }))
    }

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Reply<proto::ReleaseResponse> {
        let caller = principal(&self.policy, &request, Operation::Release)?;
        let id = convert::reservation(&request.get_ref().reservation_id).map_err(status)?;
        caller.may_touch(id.account()).map_err(status)?;
        let receipt = self.gate.release(id).await.map_err(status)?;
        Ok(Response::new(proto::ReleaseResponse {
            reservation_id: receipt.id.to_string(),
            released: money(receipt.released_minor),
            available: money(receipt.available_minor),
        }))
    }

    async fn extend(&self, request: Request<proto::ExtendRequest>) -> Reply<proto::ExtendResponse> {
        let caller = principal(&self.policy, &request, Operation::Extend)?;
        let mut request = ExtendRequest::try_from(request.get_ref()).map_err(status)?;
        request.idempotency_key = caller.scope(request.idempotency_key);
        let id = request.id.clone();
        caller.may_touch(id.account()).map_err(status)?;
        let decision = self.gate.extend(request).await.map_err(status)?;
        let v = verdict("extend", id.account(), &decision, |h| h.available_minor);
        let mut response = proto::ExtendResponse {
            decision: v.decision,
            reason: v.reason,
            available: v.available,
            message: v.message,
            limit: v.limit,
            reservation_id: id.to_string(),
            ..Default::default()
        };
        if let Decision::Allowed(hold) = decision {
            response.amount = money(hold.amount_minor);
            response.expires_at_ms = hold.expires_at_ms;
            response.split = split(&hold.split);
        }
        Ok(Response::new(response))
    }

    async fn charge(&self, request: Request<proto::ChargeRequest>) -> Reply<proto::ChargeResponse> {
        let caller = principal(&self.policy, &request, Operation::Charge)?;
        let mut request = gate::ChargeRequest::try_from(request.get_ref()).map_err(status)?;
        request.idempotency_key = caller.scope(request.idempotency_key);
        caller.may_touch(&request.account).map_err(status)?;
        let account = request.account.clone();
        let (asked, wallet, decision) = self.gate.charge(request).await.map_err(status)?;
        let v = verdict("charge", &account, &decision, |c| c.available_minor);
        let mut response = proto::ChargeResponse {
            decision: v.decision,
            reason: v.reason,
            available: v.available,
            message: v.message,
            limit: v.limit,
            charged: money(0),
            wallet: wallet.to_string(),
            ..Default::default()
        };
        if let Decision::Allowed(charge) = decision {
            response.charged = money(charge.charged_minor);
            response.split = split(&charge.split);
            response.entry_id = charge.entry_id;
        } else {
            // A denied charge charged nothing; say what it was for.
            response.message = format!("{} (asked for {})", response.message, money(asked));
        }
        Ok(Response::new(response))
    }

    async fn check(&self, request: Request<proto::CheckRequest>) -> Reply<proto::CheckResponse> {
        let caller = principal(&self.policy, &request, Operation::Check)?;
        let request = CheckRequest::try_from(request.get_ref()).map_err(status)?;
        caller.may_touch(&request.account).map_err(status)?;
        let account = request.account.clone();
        let answer = self.gate.check(request).await.map_err(status)?;
        let v = verdict("check", &account, &answer.decision, |c| c.available_minor);
        Ok(Response::new(proto::CheckResponse {
            decision: v.decision,
            reason: v.reason,
            amount: money(answer.amount_minor),
            available: v.available,
            wallet: answer.wallet.to_string(),
            message: v.message,
            limit: v.limit,
        }))
    }

    async fn get_balance(
        &self,
        request: Request<proto::GetBalanceRequest>,
    ) -> Reply<proto::GetBalanceResponse> {
        let caller = principal(&self.policy, &request, Operation::GetBalance)?;
        let r = request.into_inner();
        let account = convert::account(&r.account_id).map_err(status)?;
        let only = convert::wallet(&r.wallet).map_err(status)?;
        caller.may_touch(&account).map_err(status)?;
        Ok(Response::new(self.balance(&account, only.as_ref()).await?))
    }

    type WatchBalanceStream = ReceiverStream<Result<proto::BalanceEvent, Status>>;

    async fn watch_balance(
        &self,
        request: Request<proto::WatchBalanceRequest>,
    ) -> Reply<Self::WatchBalanceStream> {
        let caller = principal(&self.policy, &request, Operation::WatchBalance)?;
        let r = request.into_inner();
        let account = convert::account(&r.account_id).map_err(status)?;
        let mut wallets = r
            .wallets
            .iter()
            .enumerate()
            .map(|(i, w)| convert::required(&format!("wallets[{i}]"), w, WalletId::parse))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        for (i, feature) in r.features.iter().enumerate() {
            let feature = convert::required(&format!("features[{i}]"), feature, FeatureId::parse)
                .map_err(status)?;
            wallets.push(self.gate.wallet_of(&feature));
        }
        caller.may_touch(&account).map_err(status)?;
        // Subscribed before the snapshot is read, so that nothing between the two is missed.
        let mut events = self.events.subscribe();
        let snapshot = self.balance(&account, None).await?;
        let (sender, receiver) = mpsc::channel(WATCH_QUEUE_LEN);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _watching = Watching::start();
            let first = proto::BalanceEvent {
                kind: proto::BalanceEventKind::Snapshot as i32,
                account_id: account.to_string(),
                snapshot: Some(snapshot),
                ..Default::default()
            };
            if sender.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let event = tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = sender.closed() => return,
                    event = events.recv() => event,
                };
                let event = match event {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let ended = Status::resource_exhausted(format!(
                            "this watcher fell {missed} events behind and was dropped; watch again"
                        ));
                        let _ = sender.try_send(Err(ended));
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let wanted = event.account == account
                    && (wallets.is_empty() || wallets.contains(&event.wallet));
                if !wanted {
                    continue;
                }
                let event = convert::balance_event(&event);
                // A client that reads too slowly is dropped rather than let it hold up events.
                // The queue's last place is kept for the status that says so, so the client
                // learns why whenever it reads again.
                if sender.capacity() <= 1 {
                    let ended = Status::resource_exhausted(
                        "this watcher did not keep up with its events and was dropped; \
                         watch again",
                    );
                    let _ = sender.try_send(Err(ended));
                    return;
                }
                if sender.try_send(Ok(event)).is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
