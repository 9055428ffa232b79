//! Creating and checking the four tables, and batched reads and writes (layout in `docs/aws.md`).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, WriteRequest,
};
use aws_sdk_dynamodb::Client;

use crate::{error_code, poll_until, sdk_error};
use storage::{StoreError, StoreResult};

use super::attrs::built;
use super::{Item, TableNames, FILES_BY_OWNER, UPLOADS_BY_OWNER, UPLOADS_BY_SWEEP};

/// One global secondary index: name, hash key, range key, projection, included attributes.
pub(super) type IndexSpec<'a> = (
    &'a str,
    (&'a str, ScalarAttributeType),
    (&'a str, ScalarAttributeType),
    ProjectionType,
    Vec<&'a str>,
);

pub(super) struct TableSpec<'a> {
    pub(super) name: &'a str,
    pub(super) hash: (&'a str, ScalarAttributeType),
    pub(super) range: Option<(&'a str, ScalarAttributeType)>,
    /// (index name, hash, range, projection, included attributes)
    pub(super) indexes: Vec<IndexSpec<'a>>,
    pub(super) ttl: bool,
}

pub(super) fn key(name: &str, kind: KeyType) -> StoreResult<KeySchemaElement> {
    built(
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build(),
    )
}

pub(super) async fn create_table(client: &Client, spec: TableSpec<'_>) -> StoreResult<()> {
    let mut defs: Vec<(String, ScalarAttributeType)> =
        vec![(spec.hash.0.into(), spec.hash.1.clone())];
    if let Some((r, t)) = &spec.range {
        defs.push(((*r).into(), t.clone()));
    }
    let mut gsis = Vec::new();
    for (index, (h, ht), (r, rt), projection, include) in &spec.indexes {
        for (a, t) in [(h, ht), (r, rt)] {
            if !defs.iter().any(|(d, _)| d == *a) {
                defs.push(((*a).into(), t.clone()));
            }
        }
        let mut p = Projection::builder().projection_type(projection.clone());
        for attr in include {
            p = p.non_key_attributes(*attr);
        }
        gsis.push(built(
            GlobalSecondaryIndex::builder()
                .index_name(*index)
                .key_schema(key(h, KeyType::Hash)?)
                .key_schema(key(r, KeyType::Range)?)
                .projection(p.build())
                .build(),
        )?);
    }
    let mut req = client
        .create_table()
        .table_name(spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(spec.hash.0, KeyType::Hash)?);
    if let Some((r, _)) = &spec.range {
        req = req.key_schema(key(r, KeyType::Range)?);
    }
    for (a, t) in defs {
        req = req.attribute_definitions(built(
            AttributeDefinition::builder()
                .attribute_name(a)
                .attribute_type(t)
                .build(),
        )?);
    }
    if !gsis.is_empty() {
        req = req.set_global_secondary_indexes(Some(gsis));
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
        Err(e) => return Err(sdk_error(&format!("DynamoDB CreateTable {}", spec.name), e)),
    }
    poll_until(Duration::from_secs(120), spec.name, || async {
        let out = client
            .describe_table()
            .table_name(spec.name)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB DescribeTable", e))?;
        let Some(t) = out.table() else {
            return Ok(None);
        };
        let indexes_ready = t
            .global_secondary_indexes()
            .iter()
            .all(|i| i.index_status().is_none_or(|s| s.as_str() == "ACTIVE"));
        Ok((t.table_status() == Some(&TableStatus::Active) && indexes_ready).then_some(()))
    })
    .await?;
    if spec.ttl {
        let result = client
            .update_time_to_live()
            .table_name(spec.name)
            .time_to_live_specification(built(
                TimeToLiveSpecification::builder()
                    .attribute_name("ttl")
                    .enabled(true)
                    .build(),
            )?)
            .send()
            .await;
        if let Err(e) = result {
            // "TimeToLive is already enabled" is a ValidationException.
            if error_code(&e) != Some("ValidationException") {
                return Err(sdk_error("DynamoDB UpdateTimeToLive", e));
            }
        }
    }
    Ok(())
}

/// Creates the four tables (with their indexes and TTL) when missing and waits until they are
/// active.
pub async fn create_tables(sdk: &SdkConfig, names: &TableNames) -> StoreResult<()> {
    use ScalarAttributeType::{N, S};
    let client = Client::new(sdk);
    create_table(
        &client,
        TableSpec {
            name: &names.uploads,
            hash: ("upload_id", S),
            range: None,
            indexes: vec![
                (
                    UPLOADS_BY_OWNER,
                    ("owner_id", S),
                    ("created_at_ms", N),
                    ProjectionType::Include,
                    vec!["state"],
                ),
                (
                    UPLOADS_BY_SWEEP,
                    ("sweep_state", S),
                    ("sweep_at", N),
                    ProjectionType::KeysOnly,
                    vec![],
                ),
            ],
            ttl: true,
        },
    )
    .await?;
    create_table(
        &client,
        TableSpec {
            name: &names.chunks,
            hash: ("upload_id", S),
            range: Some(("idx", N)),
            indexes: vec![],
            ttl: false,
        },
    )
    .await?;
    create_table(
        &client,
        TableSpec {
            name: &names.files,
            hash: ("file_id", S),
            range: None,
            indexes: vec![(
                FILES_BY_OWNER,
                ("owner_id", S),
                ("created_key", S),
                ProjectionType::All,
                vec![],
            )],
            ttl: false,
        },
    )
    .await?;
    create_table(
        &client,
        TableSpec {
            name: &names.auth,
            hash: ("pk", S),
            range: None,
            indexes: vec![],
            ttl: true,
        },
    )
    .await?;
    Ok(())
}

/// Readiness of one table: it exists and is active.
pub(super) async fn check_table(client: &Client, table: &str) -> StoreResult<()> {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => match out.table().and_then(|t| t.table_status()) {
            Some(TableStatus::Active | TableStatus::Updating) => Ok(()),
            other => Err(StoreError::unavailable(format!(
                "DynamoDB table {table} is not active ({})",
                other.map_or("unknown", TableStatus::as_str)
            ))),
        },
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
            Err(StoreError::unavailable(format!(
                "DynamoDB table {table} does not exist (create it, or start with --create-resources)"
            )))
        }
        Err(e) => Err(sdk_error(&format!("DynamoDB DescribeTable {table}"), e)),
    }
}

/// Reads items by key in batches of 100 (strongly consistent), retrying unprocessed keys.
pub(super) async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
) -> StoreResult<Vec<Item>> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(100) {
        let mut pending: Vec<Item> = batch.to_vec();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let req = built(
                KeysAndAttributes::builder()
                    .set_keys(Some(pending.clone()))
                    .consistent_read(true)
                    .build(),
            )?;
            let res = client
                .batch_get_item()
                .request_items(table, req)
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB BatchGetItem", e))?;
            if let Some(items) = res.responses().and_then(|r| r.get(table)) {
                out.extend(items.iter().cloned());
            }
            pending = res
                .unprocessed_keys()
                .and_then(|u| u.get(table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if !pending.is_empty() {
                if attempt >= 10 {
                    return Err(StoreError::unavailable("DynamoDB left keys unprocessed"));
                }
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(5))).await;
            }
        }
    }
    Ok(out)
}

/// Writes requests in batches of 25, retrying unprocessed ones.
pub(super) async fn batch_write(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> StoreResult<()> {
    for batch in requests.chunks(25) {
        let mut pending = batch.to_vec();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let res = client
                .batch_write_item()
                .request_items(table, pending.clone())
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB BatchWriteItem", e))?;
            pending = res
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
            if !pending.is_empty() {
                if attempt >= 10 {
                    return Err(StoreError::unavailable("DynamoDB left writes unprocessed"));
                }
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(5))).await;
            }
        }
    }
    Ok(())
}
