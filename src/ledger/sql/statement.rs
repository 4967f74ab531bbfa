//! Statements built piece by piece, for the queries whose text depends on what is asked (one
//! account or all, a label, a list of accounts).

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};

use crate::domain::AccountId;
use crate::ledger::LedgerError;

/// A statement built piece by piece, numbering its parameters as they are added: PostgreSQL
/// refuses parameters a statement does not use, so only the ones written in are bound.
#[derive(Default)]
pub(super) struct Statement {
    sql: String,
    params: Vec<Param>,
}

pub(super) enum Param {
    Text(String),
    Int(i64),
}

impl Statement {
    pub(super) fn new(sql: &str) -> Statement {
        Statement {
            sql: sql.to_owned(),
            params: Vec::new(),
        }
    }

    /// Appends `sql`, in which `{}` stands for the placeholder of `param`.
    pub(super) fn push(&mut self, sql: &str, param: Param) -> &mut Statement {
        self.params.push(param);
        self.sql
            .push_str(&sql.replace("{}", &format!("${}", self.params.len())));
        self
    }

    pub(super) fn push_sql(&mut self, sql: &str) -> &mut Statement {
        self.sql.push_str(sql);
        self
    }

    /// `AND column = $n` when only one account is wanted.
    pub(super) fn only(&mut self, column: &str, only: Option<&AccountId>) -> &mut Statement {
        if let Some(account) = only {
            self.push(
                &format!(" AND {column} = {{}}"),
                Param::Text(account.to_string()),
            );
        }
        self
    }

    pub(super) async fn fetch_all<'e, 'c: 'e, E>(
        &'e self,
        executor: E,
    ) -> Result<Vec<AnyRow>, LedgerError>
    where
        E: 'e + Executor<'c, Database = Any>,
    {
        // The text is built only from this module's literals; every value is a parameter.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(self.sql.as_str()));
        for param in &self.params {
            query = match param {
                Param::Text(text) => query.bind(text.clone()),
                Param::Int(value) => query.bind(*value),
            };
        }
        Ok(query.fetch_all(executor).await?)
    }
}
