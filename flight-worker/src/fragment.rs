//! Fragments: the shard-local plans carried in shard tickets.
//!
//! A fragment is a DataFusion `LogicalPlan` encoded with `datafusion-proto`.
//! Its table scans name cluster tables through [`ShardScanTable`], encoded as
//! the `ScanTable` message by [`FragmentCodec`]. The coordinator builds and
//! encodes fragments; the worker decodes them and turns them into DuckDB SQL
//! (see `sqlgen`). Neither side executes a fragment with DataFusion.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, TableReference, not_impl_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use fsql_proto::ScanTable;
use prost::Message;

/// A cluster table as it appears inside a fragment: the name, whether it is
/// a reference table, and its schema. It cannot be scanned by DataFusion.
///
/// With `files` set it stands for files read by a DuckDB table function
/// instead (`read_parquet`, `read_csv`): shard `i` reads file group `i`.
#[derive(Debug, Clone)]
pub struct ShardScanTable {
    pub table: String,
    pub reference: bool,
    pub schema: SchemaRef,
    pub files: Option<Arc<fsql_proto::FileSource>>,
}

#[async_trait]
impl TableProvider for ShardScanTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        not_impl_err!(
            "table {} is a shard placeholder inside a fragment and is never scanned by DataFusion",
            self.table
        )
    }
}

/// Encodes and decodes [`ShardScanTable`] as `ScanTable`.
#[derive(Debug, Default, Clone)]
pub struct FragmentCodec;

impl LogicalExtensionCodec for FragmentCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> Result<Extension> {
        not_impl_err!("fragments contain no extension nodes")
    }

    fn try_encode(&self, _node: &Extension, _buf: &mut Vec<u8>) -> Result<()> {
        not_impl_err!("fragments contain no extension nodes")
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let msg = ScanTable::decode(buf)
            .map_err(|e| DataFusionError::Plan(format!("malformed ScanTable in fragment: {e}")))?;
        Ok(Arc::new(ShardScanTable {
            table: msg.table,
            reference: msg.reference,
            schema,
            files: msg.files.map(Arc::new),
        }))
    }

    fn try_encode_table_provider(
        &self,
        _table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(t) = node.downcast_ref::<ShardScanTable>() else {
            return not_impl_err!("a fragment can only scan cluster tables");
        };
        let schema = fsql_proto::ipc::schema_to_bytes(&t.schema)?;
        ScanTable {
            table: t.table.clone(),
            reference: t.reference,
            schema,
            files: t.files.as_deref().cloned(),
        }
        .encode(buf)
        .map_err(|e| DataFusionError::Internal(format!("encoding ScanTable: {e}")))
    }
}

/// Encodes a fragment for a shard ticket.
pub fn encode_fragment(plan: &LogicalPlan) -> Result<bytes::Bytes> {
    datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(plan, &FragmentCodec)
}

/// A task context with DataFusion's built-in functions, which fragments
/// name by their function names.
fn function_context() -> &'static TaskContext {
    static CTX: std::sync::OnceLock<Arc<TaskContext>> = std::sync::OnceLock::new();
    CTX.get_or_init(|| datafusion::prelude::SessionContext::new().task_ctx())
}

/// Decodes a fragment from a shard ticket.
pub fn decode_fragment(bytes: &[u8]) -> Result<LogicalPlan> {
    datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
        bytes,
        function_context(),
        &FragmentCodec,
    )
}
