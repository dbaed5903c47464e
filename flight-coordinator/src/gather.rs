//! Reading shard fragments on the coordinator.
//!
//! [`FragmentScan`] is the logical leaf the distributed planner puts where a
//! shard-local subtree was cut out; [`ShardGatherExec`] is its physical form:
//! one output partition per shard, each streaming the fragment's result
//! from a worker with a freshly signed ticket. [`FsqlQueryPlanner`] plans
//! the merge plan around them with DataFusion's default planner.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::common::{DFSchemaRef, Result};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::Expr;
use fsql_proto::ShardTicket;
use futures::StreamExt;

use crate::error::unavailable_df;
use crate::workers::{TICKET_TTL, WorkerPool};

/// Where one shard of a fragment can be read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct ShardRoute {
    pub shard: u32,
    /// Flight URLs of the workers holding the shard, preferred first.
    pub urls: Vec<String>,
}

/// A shard-local fragment, read from every shard and unioned.
#[derive(Debug, Clone)]
pub struct FragmentScan {
    pub id: u64,
    pub query_id: String,
    pub fragment: Arc<LogicalPlan>,
    pub routes: Vec<ShardRoute>,
    pub schema: DFSchemaRef,
    /// What the fragment reads, for EXPLAIN.
    pub label: String,
}

impl PartialEq for FragmentScan {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for FragmentScan {}
impl Hash for FragmentScan {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}
impl PartialOrd for FragmentScan {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.id.partial_cmp(&other.id)
    }
}

impl UserDefinedLogicalNodeCore for FragmentScan {
    fn name(&self) -> &str {
        "FragmentScan"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FragmentScan: {} shard(s) of {} [fragment #{}]",
            self.routes.len(),
            self.label,
            self.id
        )
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// Reads one fragment from every shard; partition `i` is shard route `i`.
#[derive(Debug)]
pub struct ShardGatherExec {
    schema: SchemaRef,
    query_id: String,
    fragment: Bytes,
    expected_schema: Bytes,
    routes: Vec<ShardRoute>,
    pool: Arc<WorkerPool>,
    properties: Arc<PlanProperties>,
    label: String,
    /// What each shard read did (for EXPLAIN ANALYZE).
    runs: Arc<parking_lot::Mutex<Vec<ShardRun>>>,
    /// Files and bytes each shard reads, when the fragment reads files.
    file_groups: Option<Vec<(u64, u64)>>,
}

/// One shard read of a [`ShardGatherExec`] that completed.
#[derive(Debug, Clone)]
pub struct ShardRun {
    pub shard: u32,
    /// The worker that answered.
    pub worker: String,
    pub rows: u64,
    /// From the request to the end of the shard's stream.
    pub elapsed: std::time::Duration,
    /// Replicas tried before it.
    pub failovers: usize,
}

impl ShardGatherExec {
    /// The fragment's label and the shard reads completed so far.
    pub fn runs(&self) -> (String, Vec<ShardRun>) {
        (self.label.clone(), self.runs.lock().clone())
    }

    /// For a fragment reading files: `((files, bytes), (files read, bytes
    /// read))` counting the groups whose read completed.
    pub fn file_progress(&self) -> Option<((u64, u64), (u64, u64))> {
        let groups = self.file_groups.as_ref()?;
        let total = groups
            .iter()
            .fold((0, 0), |acc, g| (acc.0 + g.0, acc.1 + g.1));
        let done = self.runs.lock().iter().fold((0, 0), |acc, run| {
            let g = groups.get(run.shard as usize).copied().unwrap_or_default();
            (acc.0 + g.0, acc.1 + g.1)
        });
        Some((total, done))
    }

    pub fn try_new(node: &FragmentScan, pool: Arc<WorkerPool>) -> Result<Self> {
        let schema: SchemaRef = Arc::new(node.schema.as_arrow().clone());
        let fragment = flight_worker::fragment::encode_fragment(&node.fragment)?;
        let expected_schema = fsql_proto::ipc::schema_to_bytes(&schema)?;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(node.routes.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            schema,
            query_id: node.query_id.clone(),
            fragment,
            expected_schema,
            routes: node.routes.clone(),
            pool,
            properties,
            label: node.label.clone(),
            runs: Arc::default(),
            file_groups: file_groups(&node.fragment),
        })
    }
}

impl DisplayAs for ShardGatherExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShardGatherExec: {} shard(s) of {}",
            self.routes.len(),
            self.label
        )
    }
}

/// The files and bytes of each file group a fragment reads, if it reads
/// files.
fn file_groups(fragment: &LogicalPlan) -> Option<Vec<(u64, u64)>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = None;
    let _ = fragment.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
            && let Some(t) = provider.downcast_ref::<flight_worker::fragment::ShardScanTable>()
            && let Some(files) = &t.files
        {
            found = Some(
                files
                    .groups
                    .iter()
                    .map(|g| (g.files.len() as u64, g.bytes))
                    .collect(),
            );
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Signs a ticket for one shard of a fragment.
pub fn shard_ticket(
    pool: &WorkerPool,
    query_id: &str,
    shard: u32,
    fragment: &Bytes,
    expected_schema: &Bytes,
) -> Bytes {
    let mut t = ShardTicket {
        version: fsql_proto::WIRE_VERSION,
        query_id: query_id.to_string(),
        shard,
        fragment: fragment.clone(),
        expected_schema: expected_schema.clone(),
        expires_at_ms: fsql_proto::now_ms() + TICKET_TTL.as_millis() as i64,
        signature: Bytes::new(),
    };
    pool.signer().sign(&mut t)
}

impl ExecutionPlan for ShardGatherExec {
    fn name(&self) -> &str {
        "ShardGatherExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = Arc::clone(&self.schema);
        let Some(route) = self.routes.get(partition).cloned() else {
            // No shards at all: an empty stream.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let pool = Arc::clone(&self.pool);
        let ticket = shard_ticket(
            &pool,
            &self.query_id,
            route.shard,
            &self.fragment,
            &self.expected_schema,
        );
        let stream = replica_stream(
            pool,
            ticket,
            route,
            self.label.clone(),
            Arc::clone(&self.runs),
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.boxed(),
        )))
    }
}

/// Whether a worker error means the worker (not the query) failed, so that
/// another replica may answer: it could not be reached, or the connection
/// broke.
fn worker_failed(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Aborted
            // hyper reports a connection that died under a request as
            // "operation was canceled" (a cancelled query ends before this:
            // see `Engine::execute`).
            | tonic::Code::Cancelled
    )
}

/// How much of a replicated shard's result is held back until the shard's
/// stream is complete, so that a replica failing mid-stream can be replaced
/// without repeating rows.
const REPLICA_HOLD_BYTES: usize = 64 << 20;

/// Reads one shard from the first replica that answers. A replicated
/// shard's batches are held back (up to [`REPLICA_HOLD_BYTES`]) until its
/// stream ends, and a replica that fails meanwhile is replaced by the next
/// one, its batches discarded. Once batches were passed on, the shard
/// cannot be restarted without repeating rows, and the query fails with
/// UNAVAILABLE naming shard and worker.
fn replica_stream(
    pool: Arc<WorkerPool>,
    ticket: Bytes,
    route: ShardRoute,
    label: String,
    runs: Arc<parking_lot::Mutex<Vec<ShardRun>>>,
) -> futures::stream::BoxStream<'static, Result<arrow::array::RecordBatch>> {
    struct State {
        runs: Arc<parking_lot::Mutex<Vec<ShardRun>>>,
        started: std::time::Instant,
        rows: u64,
        pool: Arc<WorkerPool>,
        ticket: Bytes,
        route: ShardRoute,
        label: String,
        next: usize,
        current: Option<(String, arrow_flight::decode::FlightRecordBatchStream)>,
        /// Batches were passed on (or may be, without holding back).
        sent: bool,
        /// Batches of the current replica not passed on yet.
        held: std::collections::VecDeque<arrow::array::RecordBatch>,
        held_bytes: usize,
        /// The current replica's stream ended: pass on what is held.
        complete: bool,
        failures: Vec<String>,
        done: bool,
    }
    impl State {
        fn give_up(&mut self) -> datafusion::error::DataFusionError {
            self.done = true;
            unavailable_df(format!(
                "shard {} of {} has no live replica that answered ({})",
                self.route.shard,
                self.label,
                if self.failures.is_empty() {
                    "no replica is live".to_string()
                } else {
                    self.failures.join("; ")
                }
            ))
        }
    }
    // With one replica there is nothing to fail over to: nothing is held.
    let sent = route.urls.len() < 2;
    let state = State {
        runs,
        started: std::time::Instant::now(),
        rows: 0,
        pool,
        ticket,
        route,
        label,
        next: 0,
        current: None,
        sent,
        held: Default::default(),
        held_bytes: 0,
        complete: false,
        failures: Vec::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if st.sent || st.complete {
                if let Some(batch) = st.held.pop_front() {
                    st.rows += batch.num_rows() as u64;
                    return Some((Ok(batch), st));
                }
                if st.complete {
                    st.done = true;
                    let run = ShardRun {
                        shard: st.route.shard,
                        worker: st.current.as_ref().map(|c| c.0.clone()).unwrap_or_default(),
                        rows: st.rows,
                        elapsed: st.started.elapsed(),
                        failovers: st.failures.len(),
                    };
                    st.runs.lock().push(run);
                    return None;
                }
            }
            let Some((url, stream)) = st.current.as_mut() else {
                let Some(url) = st.route.urls.get(st.next).cloned() else {
                    let e = st.give_up();
                    return Some((Err(e), st));
                };
                st.next += 1;
                match st.pool.get(&url, st.ticket.clone()).await {
                    Ok(s) => st.current = Some((url, s)),
                    Err(crate::error::Error::Unavailable(m)) => st.failures.push(m),
                    Err(crate::error::Error::Worker { context, source })
                        if worker_failed(&source) =>
                    {
                        st.failures.push(format!("{context}: {}", source.message()));
                    }
                    Err(other) => {
                        st.done = true;
                        let e = datafusion::error::DataFusionError::External(Box::new(
                            tonic::Status::from(other),
                        ));
                        return Some((Err(e), st));
                    }
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(batch)) if st.sent => {
                    st.rows += batch.num_rows() as u64;
                    return Some((Ok(batch), st));
                }
                Some(Ok(batch)) => {
                    st.held_bytes += batch.get_array_memory_size();
                    st.held.push_back(batch);
                    if st.held_bytes > REPLICA_HOLD_BYTES {
                        st.sent = true;
                    }
                }
                None => st.complete = true,
                Some(Err(e)) => {
                    let status = match e {
                        arrow_flight::error::FlightError::Tonic(s) => *s,
                        other => tonic::Status::internal(other.to_string()),
                    };
                    let url = url.clone();
                    if worker_failed(&status) && !st.sent {
                        tracing::warn!(
                            shard = st.route.shard,
                            table = %st.label,
                            worker = %url,
                            "replica failed before sending rows, trying the next: {}",
                            status.message()
                        );
                        st.failures
                            .push(format!("worker {url}: {}", status.message()));
                        st.current = None;
                        st.held.clear();
                        st.held_bytes = 0;
                        continue;
                    }
                    st.done = true;
                    let e = if worker_failed(&status) {
                        unavailable_df(format!(
                            "worker {url} failed while streaming shard {} of {} after part of \
                             it was read; the query cannot go on without repeating rows, \
                             retry it: {}",
                            st.route.shard,
                            st.label,
                            status.message()
                        ))
                    } else {
                        datafusion::error::DataFusionError::External(Box::new(tonic::Status::new(
                            status.code(),
                            format!("worker {url}: {}", status.message()),
                        )))
                    };
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}

struct FragmentPlanner {
    pool: Arc<WorkerPool>,
}

#[async_trait]
impl ExtensionPlanner for FragmentPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &SessionState,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(scan) = node.as_any().downcast_ref::<FragmentScan>() else {
            return Ok(None);
        };
        Ok(Some(Arc::new(ShardGatherExec::try_new(
            scan,
            Arc::clone(&self.pool),
        )?)))
    }
}

/// DataFusion's physical planner plus [`FragmentScan`] support.
#[derive(Debug)]
pub struct FsqlQueryPlanner {
    pub pool: Arc<WorkerPool>,
}

#[async_trait]
impl QueryPlanner for FsqlQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &SessionState,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner =
            DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(FragmentPlanner {
                pool: Arc::clone(&self.pool),
            })]);
        planner
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}
