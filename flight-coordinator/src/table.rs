//! The DataFusion view of a cluster table.
//!
//! [`ClusterTable`] carries a table's schema and metadata into DataFusion's
//! planner. It accepts the filters a worker can run (so the optimizer moves
//! them into the scan) and is never scanned itself: the distributed planner
//! replaces every scan of it with shard fragments.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result, internal_err};
use datafusion::logical_expr::{TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;

use crate::catalog::TableMeta;

#[derive(Debug)]
pub struct ClusterTable {
    pub meta: Arc<TableMeta>,
}

#[async_trait]
impl TableProvider for ClusterTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.meta.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let schema =
            DFSchema::try_from_qualified_schema(self.meta.name.as_str(), &self.meta.schema)?;
        Ok(filters
            .iter()
            .map(|f| {
                if flight_worker::sqlgen::table_filter_supported(f, &schema) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        internal_err!(
            "table {} reached execution without being distributed",
            self.meta.name
        )
    }
}
