//! DynamoDB Time to Live, which moto does not run: every table whose template enables TTL is
//! swept for items whose TTL attribute (epoch seconds) has passed, and those are deleted, as
//! DynamoDB's background process does (on AWS up to days late; here every sweep interval, or
//! at once when asked).

use aws_sdk_dynamodb::Client;

use crate::SimError;
use crate::template::{Resolver, scalar};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};

/// A table with TTL enabled.
#[derive(Debug, Clone)]
pub struct TtlTable {
    pub name: String,
    pub attribute: String,
    pub keys: Vec<String>,
}

/// The stack's tables whose template enables TTL.
pub fn tables(resolver: &Resolver) -> Result<Vec<TtlTable>, SimError> {
    let mut tables = Vec::new();
    for (id, _) in resolver.template().of_type("AWS::DynamoDB::Table") {
        if !resolver.active(id)? {
            continue;
        }
        let p = resolver.properties(id)?;
        if p["TimeToLiveSpecification"]["Enabled"] == true {
            tables.push(TtlTable {
                name: resolver.physical(id).unwrap_or(id).to_string(),
                attribute: scalar(&p["TimeToLiveSpecification"]["AttributeName"]),
                keys: p["KeySchema"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| scalar(&k["AttributeName"]))
                    .collect(),
            });
        }
    }
    Ok(tables)
}

pub struct Sweeper {
    pub client: Client,
    pub tables: Vec<TtlTable>,
}

impl Sweeper {
    /// Deletes every item expired at `now_secs`; returns how many.
    pub async fn sweep(&self, now_secs: i64) -> Result<u64, String> {
        let mut deleted = 0;
        for t in &self.tables {
            let mut start = None;
            loop {
                let page = self
                    .client
                    .scan()
                    .table_name(&t.name)
                    .filter_expression("#ttl < :now")
                    .expression_attribute_names("#ttl", &t.attribute)
                    .expression_attribute_values(":now", AttributeValue::N(now_secs.to_string()))
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| format!("scanning {} for expired items: {e:?}", t.name))?;
                let keys: Vec<_> = page
                    .items()
                    .iter()
                    .map(|item| {
                        t.keys
                            .iter()
                            .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
                            .collect::<std::collections::HashMap<_, _>>()
                    })
                    .collect();
                for chunk in keys.chunks(25) {
                    let mut requests: Vec<WriteRequest> = chunk
                        .iter()
                        .map(|k| {
                            WriteRequest::builder()
                                .delete_request(
                                    DeleteRequest::builder()
                                        .set_key(Some(k.clone()))
                                        .build()
                                        .expect("key is set"),
                                )
                                .build()
                        })
                        .collect();
                    while !requests.is_empty() {
                        let out = self
                            .client
                            .batch_write_item()
                            .request_items(&t.name, requests.clone())
                            .send()
                            .await
                            .map_err(|e| format!("deleting expired items of {}: {e:?}", t.name))?;
                        let left = out
                            .unprocessed_items()
                            .and_then(|u| u.get(&t.name))
                            .cloned()
                            .unwrap_or_default();
                        deleted += (requests.len() - left.len()) as u64;
                        requests = left;
                    }
                }
                start = page.last_evaluated_key().cloned();
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}
