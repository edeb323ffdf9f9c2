//! [`DynamoConnections`]: WebSocket connections in table `{project}-connections` (`pk` S, `sk` S,
//! TTL `expires_at`). Each connection is two items written in one transaction:
//! `pk = "exec#{execution}", sk = connection` (listed by a strongly consistent Query, so a
//! connection that finished `$connect` is never missed) and `pk = "conn#{connection}", sk = "conn"`
//! (finds the execution from `$disconnect`'s connection id alone).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Delete, Put, ReturnValue, TransactWriteItem};
use runvoy_core::ports::ConnectionStore;
use runvoy_core::{Connection, StoreError};

use super::item::{Item, get_n, get_s, n, s};
use super::logs::map_sdk;

#[derive(Clone)]
pub struct DynamoConnections {
    client: Client,
    table: String,
}

fn member_key(execution_id: &str, connection_id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("exec#{execution_id}"))),
        ("sk".to_string(), s(connection_id)),
    ])
}

fn lookup_key(connection_id: &str) -> Item {
    HashMap::from([
        ("pk".to_string(), s(format!("conn#{connection_id}"))),
        ("sk".to_string(), s("conn")),
    ])
}

fn from_item(item: &Item) -> Result<Connection, StoreError> {
    Ok(Connection {
        connection_id: get_s(item, "connection_id")?,
        execution_id: get_s(item, "execution_id")?,
        cursor: get_n(item, "cursor")?,
        connected_at: get_n(item, "connected_at")?,
        expires_at: get_n(item, "expires_at")?,
        resumed_at: match item.get("resumed_at") {
            Some(_) => get_n(item, "resumed_at")?,
            None => 0,
        },
    })
}

fn build<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::backend("building a DynamoDB request", e))
}

impl DynamoConnections {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoConnections {
        DynamoConnections {
            client,
            table: table.into(),
        }
    }

    async fn execution_of(&self, connection_id: &str) -> Result<Option<String>, StoreError> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(lookup_key(connection_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(e, "GetItem"))?;
        resp.item.map(|i| get_s(&i, "execution_id")).transpose()
    }

    async fn member(
        &self,
        execution_id: &str,
        connection_id: &str,
    ) -> Result<Option<Connection>, StoreError> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(member_key(execution_id, connection_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk(e, "GetItem"))?;
        resp.item.as_ref().map(from_item).transpose()
    }
}

#[async_trait]
impl ConnectionStore for DynamoConnections {
    async fn put(&self, c: Connection) -> Result<(), StoreError> {
        let mut member = member_key(&c.execution_id, &c.connection_id);
        member.insert("connection_id".into(), s(&c.connection_id));
        member.insert("execution_id".into(), s(&c.execution_id));
        member.insert("cursor".into(), n(c.cursor));
        member.insert("connected_at".into(), n(c.connected_at));
        member.insert("expires_at".into(), n(c.expires_at));
        if c.resumed_at != 0 {
            member.insert("resumed_at".into(), n(c.resumed_at));
        }
        let mut lookup = lookup_key(&c.connection_id);
        lookup.insert("execution_id".into(), s(&c.execution_id));
        lookup.insert("expires_at".into(), n(c.expires_at));
        let puts = [member, lookup]
            .into_iter()
            .map(|item| {
                let p = build(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .build(),
                )?;
                Ok(TransactWriteItem::builder().put(p).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.client
            .transact_write_items()
            .set_transact_items(Some(puts))
            .send()
            .await
            .map_err(|e| map_sdk(e, "TransactWriteItems"))?;
        Ok(())
    }

    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        match self.execution_of(connection_id).await? {
            Some(exec) => self.member(&exec, connection_id).await,
            None => Ok(None),
        }
    }

    async fn remove(&self, connection_id: &str) -> Result<(), StoreError> {
        let Some(exec) = self.execution_of(connection_id).await? else {
            return Ok(());
        };
        let deletes = [member_key(&exec, connection_id), lookup_key(connection_id)]
            .into_iter()
            .map(|key| {
                let d = build(
                    Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key))
                        .build(),
                )?;
                Ok(TransactWriteItem::builder().delete(d).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.client
            .transact_write_items()
            .set_transact_items(Some(deletes))
            .send()
            .await
            .map_err(|e| map_sdk(e, "TransactWriteItems"))?;
        Ok(())
    }

    async fn list(&self, execution_id: &str) -> Result<Vec<Connection>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p")
                .expression_attribute_values(":p", s(format!("exec#{execution_id}")))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| map_sdk(e, "Query"))?;
            for it in resp.items.unwrap_or_default() {
                out.push(from_item(&it)?);
            }
            start = resp.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    async fn advance(&self, conn: &Connection, cursor: u64) -> Result<Option<u64>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(member_key(&conn.execution_id, &conn.connection_id)))
            .update_expression("SET #c = :c")
            .condition_expression("attribute_exists(pk) AND #c < :c")
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":c", n(cursor))
            .return_values(ReturnValue::UpdatedOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                Ok(Some(get_n(&old, "cursor")?))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                // Gone, or already at or past `cursor`: report what it has.
                Ok(self
                    .member(&conn.execution_id, &conn.connection_id)
                    .await?
                    .map(|c| c.cursor))
            }
            Err(e) => Err(map_sdk(e, "UpdateItem")),
        }
    }

    async fn resume(
        &self,
        conn: &Connection,
        cursor: u64,
        now: i64,
        min_interval_ms: i64,
    ) -> Result<runvoy_core::ports::Resumed, StoreError> {
        use runvoy_core::ports::Resumed;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(member_key(&conn.execution_id, &conn.connection_id)))
            .update_expression("SET #c = :c, resumed_at = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(resumed_at) OR resumed_at <= :before)",
            )
            .expression_attribute_names("#c", "cursor")
            .expression_attribute_values(":c", n(cursor))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":before", n(now - min_interval_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Resumed::Done),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(
                    match self.member(&conn.execution_id, &conn.connection_id).await? {
                        Some(_) => Resumed::TooSoon,
                        None => Resumed::Gone,
                    },
                )
            }
            Err(e) => Err(map_sdk(e, "UpdateItem")),
        }
    }
}
