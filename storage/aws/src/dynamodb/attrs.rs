//! Attribute values, condition expressions and transactions: the small vocabulary every
//! request of the stores is written in.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::error::{BuildError, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::{error_code, sdk_error};
use storage::{StoreError, StoreResult};

use super::{Item, TX_ATTEMPTS};

pub(super) fn s(v: impl AsRef<str>) -> AttributeValue {
    AttributeValue::S(v.as_ref().to_owned())
}

pub(super) fn n(v: impl Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn malformed(key: &str) -> StoreError {
    StoreError::other(format!(
        "malformed DynamoDB item: attribute {key} is missing or invalid"
    ))
}

pub(super) fn get_s(item: &Item, key: &str) -> StoreResult<String> {
    opt_s(item, key).ok_or_else(|| malformed(key))
}

pub(super) fn opt_s(item: &Item, key: &str) -> Option<String> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

pub(super) fn get_n<T: FromStr>(item: &Item, key: &str) -> StoreResult<T> {
    opt_n(item, key).ok_or_else(|| malformed(key))
}

pub(super) fn opt_n<T: FromStr>(item: &Item, key: &str) -> Option<T> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

pub(super) fn built<T>(r: Result<T, BuildError>) -> StoreResult<T> {
    r.map_err(|e| StoreError::other_from(format!("building a DynamoDB request: {e}"), e))
}

/// Expression attribute names and values.
#[derive(Debug, Default, Clone)]
pub(super) struct Expr {
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl Expr {
    pub(super) fn new() -> Self {
        Self::default()
    }
    pub(super) fn name(mut self, placeholder: &str, attribute: &str) -> Self {
        self.names.insert(placeholder.into(), attribute.into());
        self
    }
    pub(super) fn value(mut self, placeholder: &str, v: AttributeValue) -> Self {
        self.values.insert(placeholder.into(), v);
        self
    }
    pub(super) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }
    pub(super) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

pub(super) fn is_condition_failed<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error_code(e) == Some("ConditionalCheckFailedException")
}

/// How a transaction ended.
pub(super) enum TxOutcome {
    Done,
    /// A condition failed; the cancellation reason code of each item (in order).
    ConditionFailed(Vec<String>),
}

/// Runs a transaction, retrying while it is cancelled by concurrent transactions.
pub(super) async fn transact(
    client: &Client,
    what: &str,
    items: Vec<TransactWriteItem>,
) -> StoreResult<TxOutcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .send()
            .await;
        let err: SdkError<TransactWriteItemsError, HttpResponse> = match result {
            Ok(_) => return Ok(TxOutcome::Done),
            Err(e) => e,
        };
        let mut conflict = matches!(
            error_code(&err),
            Some("TransactionConflictException" | "TransactionInProgressException")
        );
        if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
            err.as_service_error()
        {
            let codes: Vec<String> = c
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_owned())
                .collect();
            if codes.iter().any(|c| c == "ConditionalCheckFailed") {
                return Ok(TxOutcome::ConditionFailed(codes));
            }
            // Moto (and older servers) may give no reasons for a failed condition.
            if codes.is_empty()
                && c.message()
                    .is_some_and(|m| m.contains("ConditionalCheckFailed"))
            {
                return Ok(TxOutcome::ConditionFailed(codes));
            }
            conflict = conflict
                || codes
                    .iter()
                    .any(|c| c == "TransactionConflict" || c == "ThrottlingError");
        }
        if !conflict || attempt >= TX_ATTEMPTS {
            return Err(sdk_error(what, err));
        }
        // Jittered backoff: 5..=5*2^n ms, at most ~320 ms.
        let cap = 5u64 << attempt.min(6);
        let nap = 5 + rand::random::<u64>() % cap;
        tokio::time::sleep(Duration::from_millis(nap)).await;
    }
}
