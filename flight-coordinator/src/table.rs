//! The DataFusion view of the cluster's tables.
//!
//! [`ClusterSchema`] is the schema every cluster table lives in: it looks
//! tables up in the [`Catalog`] at planning time, so tables created, dropped
//! or moved through any coordinator are seen at once. [`ClusterTable`] carries a table's schema and metadata into DataFusion's
//! planner. It accepts the filters a worker can run (so the optimizer moves
//! them into the scan) and is never scanned itself: the distributed planner
//! replaces every scan of it with shard fragments.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, Result, internal_err};
use datafusion::logical_expr::{TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;

use crate::catalog::{Catalog, TableMeta};

/// The cluster tables, as the catalog has them now.
#[derive(Debug)]
pub struct ClusterSchema {
    pub catalog: Arc<Catalog>,
}

#[async_trait]
impl SchemaProvider for ClusterSchema {
    fn table_names(&self) -> Vec<String> {
        self.catalog
            .tables()
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .catalog
            .table(name)
            .map(|meta| Arc::new(ClusterTable { meta, files: None }) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.table(name).is_some()
    }
}

#[derive(Debug)]
pub struct ClusterTable {
    pub meta: Arc<TableMeta>,
    /// Set for files read with `read_parquet`/`read_csv` (see `files`): the
    /// meta then describes the file groups as shards.
    pub files: Option<Arc<fsql_proto::FileSource>>,
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
