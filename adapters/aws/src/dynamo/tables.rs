//! Creates the tables (tests, emulators and `deploy up --aws-endpoint`; CloudFormation creates
//! them in AWS).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use runvoy_core::StoreError;

/// Creates the logs and connections tables with TTL on `expires_at`; existing tables are kept.
pub async fn create_tables(
    client: &Client,
    logs_table: &str,
    connections_table: &str,
) -> Result<(), StoreError> {
    create(
        client,
        logs_table,
        ("execution_id", ScalarAttributeType::S),
        ("log_index", ScalarAttributeType::N),
        true,
    )
    .await?;
    create(
        client,
        connections_table,
        ("pk", ScalarAttributeType::S),
        ("sk", ScalarAttributeType::S),
        false,
    )
    .await
}

async fn create(
    client: &Client,
    table: &str,
    hash: (&str, ScalarAttributeType),
    range: (&str, ScalarAttributeType),
    recent_index: bool,
) -> Result<(), StoreError> {
    let build = |e: aws_sdk_dynamodb::error::BuildError| {
        StoreError::backend(format!("building the request creating table {table}"), e)
    };
    let mut request = client.create_table();
    if recent_index {
        // The same index the template declares (see `item::RECENT_INDEX`).
        for name in ["created_day", "created_at"] {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .map_err(build)?,
            );
        }
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(super::item::RECENT_INDEX)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("created_day")
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(build)?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("created_at")
                        .key_type(KeyType::Range)
                        .build()
                        .map_err(build)?,
                )
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("status")
                        .non_key_attributes("exit_code")
                        .non_key_attributes("final_index")
                        .build(),
                )
                .build()
                .map_err(build)?,
        );
    }
    let result = request
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(hash.0)
                .attribute_type(hash.1)
                .build()
                .map_err(build)?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(range.0)
                .attribute_type(range.1)
                .build()
                .map_err(build)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(hash.0)
                .key_type(KeyType::Hash)
                .build()
                .map_err(build)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(range.0)
                .key_type(KeyType::Range)
                .build()
                .map_err(build)?,
        )
        .send()
        .await;
    if let Err(e) = result {
        let exists = e
            .as_service_error()
            .is_some_and(|s| s.is_resource_in_use_exception());
        if !exists {
            return Err(StoreError::backend(
                format!("creating table {table} failed"),
                e,
            ));
        }
        return Ok(());
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .map_err(build)?,
        )
        .send()
        .await
        .map_err(|e| StoreError::backend(format!("enabling TTL on {table} failed"), e))?;
    Ok(())
}
