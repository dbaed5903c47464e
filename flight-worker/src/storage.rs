//! The worker's DuckDB database.
//!
//! One persistent database file, `<data_dir>/shards.duckdb`, holds every
//! shard table of this worker; `<data_dir>/worker_id` holds the worker's
//! stable id. This module owns the file layout, the Arrow → DuckDB column
//! types, the shard DDL, appends, stats and running a fragment's SQL.
//!
//! Everything here is synchronous and blocks: callers run it on the
//! blocking pool (see `service`), each request on its own connection from
//! [`Storage::connect`]. It knows nothing of gRPC, tickets or fragments:
//! the SQL of a fragment comes from `sqlgen`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, StructArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use duckdb::Connection;
use fsql_proto::{ShardStat, ShardTarget, quote_ident, shard_table_name};
use parking_lot::Mutex;

use crate::config::WorkerConfig;
use crate::error::{Error, Result};

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "shards.duckdb";

/// Name of the file holding the worker id inside the data directory.
pub const WORKER_ID_FILE: &str = "worker_id";

/// Data directories opened by a [`Storage`] of this process. DuckDB's file
/// lock only keeps other processes out, and two database instances on one
/// file corrupt it.
static OPEN_DIRS: Mutex<BTreeSet<PathBuf>> = parking_lot::const_mutex(BTreeSet::new());

/// Casts never turn bad values into nulls.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// The worker's database file and id.
pub struct Storage {
    worker_id: String,
    path: PathBuf,
    /// This storage's entry in [`OPEN_DIRS`], until released.
    dir: Mutex<Option<PathBuf>>,
    /// The connection every request connection is cloned from; `None` once
    /// the worker shuts down.
    root: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("worker_id", &self.worker_id)
            .field("path", &self.path)
            .finish()
    }
}

impl Storage {
    /// Creates the data directory if needed, loads or creates the worker id
    /// and opens the database with the configured memory limit and threads.
    pub fn open(config: &WorkerConfig) -> Result<Self> {
        config.validate()?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: "creating data directory",
            path: dir.clone(),
            source,
        })?;
        let dir = dir.canonicalize().map_err(|source| Error::Io {
            what: "resolving data directory",
            path: dir.clone(),
            source,
        })?;
        if !OPEN_DIRS.lock().insert(dir.clone()) {
            return Err(Error::Config(format!(
                "data directory {} is already used by another worker of this process",
                dir.display()
            )));
        }
        // From here on, dropping `storage` releases the directory.
        let mut storage = Storage {
            worker_id: String::new(),
            path: dir.join(DATABASE_FILE),
            dir: Mutex::new(Some(dir.clone())),
            root: Mutex::new(None),
        };
        storage.worker_id = load_or_create_worker_id(&dir)?;
        let conn = Connection::open(&storage.path).map_err(Error::duckdb(format!(
            "opening database {}",
            storage.path.display()
        )))?;
        if let Some(limit) = &config.memory_limit {
            conn.execute_batch(&format!("SET memory_limit = {}", sql_string(limit.trim())))
                .map_err(|e| Error::Config(format!("memory limit {limit:?} refused: {e}")))?;
        }
        if let Some(threads) = config.threads {
            conn.execute_batch(&format!("SET threads = {threads}"))
                .map_err(|e| Error::Config(format!("threads {threads} refused: {e}")))?;
        }
        *storage.root.lock() = Some(conn);
        Ok(storage)
    }

    /// The stable id of this worker.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection to the database, for one request. Blocks briefly.
    pub fn connect(&self) -> Result<Connection> {
        let root = self.root.lock();
        let Some(root) = root.as_ref() else {
            return Err(Error::ShuttingDown);
        };
        root.try_clone()
            .map_err(Error::duckdb("opening a database connection"))
    }

    /// Refuses new connections and closes the root one. The database file
    /// is closed (and checkpointed) when the last request connection is
    /// dropped too. Blocks.
    pub fn close(&self) {
        let root = self.root.lock().take();
        drop(root);
    }

    /// Lets another `Storage` of this process open the data directory.
    /// Call after [`Self::close`] once no request connection is left (it
    /// also happens on drop).
    pub fn release(&self) {
        if let Some(dir) = self.dir.lock().take() {
            OPEN_DIRS.lock().remove(&dir);
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.release();
    }
}

/// Reads `<dir>/worker_id`, or writes a new UUID v4 there on first start.
/// An operator may put any id of their choosing in the file.
fn load_or_create_worker_id(dir: &Path) -> Result<String> {
    let path = dir.join(WORKER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::Config(format!(
                    "{} must hold one worker id without spaces, found {text:?}",
                    path.display()
                )));
            }
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            // Write then rename, so a crash never leaves a half-written id.
            let tmp = dir.join(format!("{WORKER_ID_FILE}.tmp"));
            let io = |what| {
                let path = path.clone();
                move |source| Error::Io { what, path, source }
            };
            std::fs::write(&tmp, format!("{id}\n")).map_err(io("writing worker id"))?;
            std::fs::rename(&tmp, &path).map_err(io("writing worker id"))?;
            tracing::info!(worker_id = %id, path = %path.display(), "created a new worker id");
            Ok(id)
        }
        Err(source) => Err(Error::Io {
            what: "reading worker id",
            path,
            source,
        }),
    }
}

/// A SQL string literal.
pub fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The DuckDB table holding `target`, checked for a usable name.
pub fn table_name(target: &ShardTarget) -> Result<String> {
    let table = &target.table;
    if table.is_empty() {
        return Err(Error::BadRequest(
            "shard target has an empty table name".into(),
        ));
    }
    if table.chars().any(char::is_control) {
        return Err(Error::BadRequest(format!(
            "table name {table:?} contains control characters"
        )));
    }
    Ok(shard_table_name(table, target.shard, target.reference))
}

// ---------------------------------------------------------------------------
// Column types

/// Field metadata key naming the DuckDB type of a column where the Arrow
/// type alone is ambiguous: `HUGEINT` and `UHUGEINT` (Arrow
/// `Decimal128(38, 0)`, which is otherwise `DECIMAL(38,0)`) and `UUID`
/// (Arrow `Utf8`, otherwise `VARCHAR`). See `docs/types.md`.
pub const DUCKDB_TYPE_KEY: &str = "fsql.duckdb_type";

/// The DuckDB type named by a field's [`DUCKDB_TYPE_KEY`] metadata, when it
/// fits the field's Arrow type.
pub fn marked_type(field: &Field) -> Option<&'static str> {
    let name = field.metadata().get(DUCKDB_TYPE_KEY)?;
    match (name.to_ascii_uppercase().as_str(), field.data_type()) {
        ("HUGEINT", DataType::Decimal128(38, 0)) => Some("HUGEINT"),
        ("UHUGEINT", DataType::Decimal128(38, 0)) => Some("UHUGEINT"),
        ("UUID", DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => Some("UUID"),
        _ => None,
    }
}

/// The DuckDB column type for an Arrow field, e.g. `DECIMAL(12,2)` or
/// `VARCHAR[]`. Unsupported types are refused with the column named.
pub fn column_type(field: &Field) -> Result<String> {
    if let Some(marked) = marked_type(field) {
        return Ok(marked.to_string());
    }
    sql_type(field.data_type()).map_err(|reason| Error::UnsupportedType {
        column: field.name().clone(),
        data_type: field.data_type().clone(),
        reason,
    })
}

pub(crate) fn sql_type(dt: &DataType) -> std::result::Result<String, &'static str> {
    use arrow::datatypes::TimeUnit;
    Ok(match dt {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        // DuckDB keeps time zone aware timestamps in microseconds, as UTC.
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Timestamp(TimeUnit::Second, None) => "TIMESTAMP_S".into(),
        DataType::Timestamp(TimeUnit::Millisecond, None) => "TIMESTAMP_MS".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => "TIMESTAMP_NS".into(),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".into(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            if *p == 0 || *p > 38 {
                return Err("DuckDB decimals have a precision of 1 to 38");
            }
            if *s < 0 || i16::from(*s) > i16::from(*p) {
                return Err("DuckDB decimals need a scale between 0 and the precision");
            }
            format!("DECIMAL({p},{s})")
        }
        DataType::List(child) | DataType::LargeList(child) => {
            format!("{}[]", sql_type(child.data_type())?)
        }
        DataType::FixedSizeList(child, n) => format!("{}[{n}]", sql_type(child.data_type())?),
        DataType::Struct(fields) => {
            if fields.is_empty() {
                return Err("DuckDB structs need at least one field");
            }
            let mut members = Vec::with_capacity(fields.len());
            for f in fields {
                members.push(format!(
                    "{} {}",
                    quote_ident(f.name()),
                    sql_type(f.data_type())?
                ));
            }
            format!("STRUCT({})", members.join(", "))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                sql_type(kv[0].data_type())?,
                sql_type(kv[1].data_type())?
            ),
            _ => return Err("map entries must be a struct of key and value"),
        },
        DataType::Dictionary(_, values) => sql_type(values)?,
        DataType::Null => return Err("a column of type Null holds no values"),
        _ => return Err("no DuckDB column type corresponds to it"),
    })
}

/// `CREATE TABLE IF NOT EXISTS` for a shard table. Non-nullable fields
/// become `NOT NULL` columns.
pub fn create_table_sql(table: &str, schema: &Schema) -> Result<String> {
    if schema.fields().is_empty() {
        return Err(Error::BadRequest(format!(
            "shard table {table} needs at least one column"
        )));
    }
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let null = if field.is_nullable() { "" } else { " NOT NULL" };
        columns.push(format!(
            "{} {}{null}",
            quote_ident(field.name()),
            column_type(field)?
        ));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote_ident(table),
        columns.join(", ")
    ))
}

// ---------------------------------------------------------------------------
// Shard DDL and stats

/// Runs `SELECT 1`: the database is open and answers.
pub fn ping(conn: &Connection) -> Result<()> {
    conn.query_row("SELECT 1", [], |row| row.get::<_, i32>(0))
        .map_err(Error::duckdb("health check"))?;
    Ok(())
}

/// DuckDB's memory use and the number of shard tables, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResourceUsage {
    /// `sum(memory_usage_bytes)` of `duckdb_memory()`.
    pub memory_bytes: u64,
    /// Tables named like shards (`<table>__s<n>`, `<table>__ref`).
    pub shard_tables: u64,
}

/// Reads DuckDB's memory use and counts the shard tables.
pub fn resource_usage(conn: &Connection) -> Result<ResourceUsage> {
    let memory: i64 = conn
        .query_row(
            "SELECT CAST(coalesce(sum(memory_usage_bytes), 0) AS BIGINT) FROM duckdb_memory()",
            [],
            |row| row.get(0),
        )
        .map_err(Error::duckdb("reading duckdb_memory()"))?;
    let shards: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_tables() \
             WHERE database_name = current_database() AND schema_name = current_schema() \
             AND regexp_matches(table_name, '__(s[0-9]+|ref)$')",
            [],
            |row| row.get(0),
        )
        .map_err(Error::duckdb("counting shard tables"))?;
    Ok(ResourceUsage {
        memory_bytes: u64::try_from(memory).unwrap_or(0),
        shard_tables: u64::try_from(shards).unwrap_or(0),
    })
}

/// Whether `table` exists in the worker's database. DuckDB resolves names
/// case-insensitively, and so does this.
pub fn table_exists(conn: &Connection, table: &str) -> Result<bool> {
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_tables() \
             WHERE database_name = current_database() AND schema_name = current_schema() \
             AND lower(table_name) = lower(?)",
            [table],
            |row| row.get(0),
        )
        .map_err(Error::duckdb(format!("looking up table {table}")))?;
    Ok(n > 0)
}

/// The Arrow schema DuckDB reports for an existing table (what a scan of it
/// returns, and what the appender takes).
pub fn table_schema(conn: &Connection, table: &str) -> Result<SchemaRef> {
    let sql = format!("SELECT * FROM {} LIMIT 0", quote_ident(table));
    let mut stmt = conn
        .prepare(&sql)
        .map_err(Error::duckdb(format!("reading the columns of {table}")))?;
    let arrow = stmt
        .query_arrow([])
        .map_err(Error::duckdb(format!("reading the columns of {table}")))?;
    Ok(arrow.get_schema())
}

/// Lists the files matching `patterns` (DuckDB globs, in order, each file
/// once) and the schema `function` (`read_parquet` or `read_csv`) reads
/// from all of them with `options` (named arguments in DuckDB syntax).
///
/// The returned options read any subset of the files with the same columns
/// and types: for CSV the types DuckDB detects over all the files are
/// pinned (each subset is still sniffed for its dialect and header).
pub fn describe_files(
    conn: &Connection,
    function: &str,
    patterns: &[String],
    options: &str,
) -> Result<fsql_proto::FilesDescription> {
    if !matches!(function, "read_parquet" | "read_csv") {
        return Err(Error::BadRequest(format!(
            "unknown file function {function}; use read_parquet or read_csv"
        )));
    }
    let mut files: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for pattern in patterns {
        let mut stmt = conn
            .prepare("SELECT file FROM glob(?) ORDER BY file")
            .map_err(Error::duckdb(format!("listing files matching {pattern:?}")))?;
        let matched: Vec<String> = stmt
            .query_map([pattern], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(Error::duckdb(format!("listing files matching {pattern:?}")))?;
        if matched.is_empty() {
            return Err(Error::FileNotFound(pattern.clone()));
        }
        for f in matched {
            if seen.insert(f.clone()) {
                files.push(f);
            }
        }
    }
    let sizes = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .collect();
    let call = |options: &str| {
        let list: Vec<String> = files.iter().map(|f| sql_string(f)).collect();
        let mut call = format!("{function}([{}]", list.join(", "));
        if !options.is_empty() {
            call.push_str(", ");
            call.push_str(options);
        }
        call.push(')');
        call
    };
    let context = || format!("reading {} with {function}", patterns.join(", "));
    let sql = format!("SELECT * FROM {} LIMIT 0", call(options));
    let mut stmt = conn.prepare(&sql).map_err(Error::duckdb(context()))?;
    let schema = stmt
        .query_arrow([])
        .map_err(Error::duckdb(context()))?
        .get_schema();
    let mut pinned = options.to_string();
    let lowered = options.to_ascii_lowercase();
    let typed = ["columns", "types", "dtypes", "column_types", "auto_detect"]
        .iter()
        .any(|o| lowered.contains(o));
    if function == "read_csv" && !typed {
        let mut stmt = conn
            .prepare(&format!("DESCRIBE SELECT * FROM {}", call(options)))
            .map_err(Error::duckdb(context()))?;
        let columns: Vec<(String, String)> = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(Error::duckdb(context()))?;
        let types: Vec<String> = columns
            .iter()
            .map(|(name, ty)| format!("{}: {}", sql_string(name), sql_string(ty)))
            .collect();
        if !pinned.is_empty() {
            pinned.push_str(", ");
        }
        pinned.push_str(&format!("types = {{{}}}", types.join(", ")));
    }
    Ok(fsql_proto::FilesDescription {
        files,
        sizes,
        schema: fsql_proto::ipc::schema_to_bytes(&schema).map_err(|source| Error::BadSchema {
            what: "schema of the files",
            source,
        })?,
        options: pinned,
    })
}

/// Creates the shard table of `target` with `schema`. Idempotent: an
/// existing table with the same column names is left alone (returns
/// `false`); one with other columns is a conflict.
pub fn create_shard(conn: &Connection, target: &ShardTarget, schema: &Schema) -> Result<bool> {
    let table = table_name(target)?;
    let ddl = create_table_sql(&table, schema)?;
    if table_exists(conn, &table)? {
        let existing = table_schema(conn, &table)?;
        let same = existing.fields().len() == schema.fields().len()
            && existing
                .fields()
                .iter()
                .zip(schema.fields())
                .all(|(a, b)| a.name().eq_ignore_ascii_case(b.name()));
        if same {
            return Ok(false);
        }
        let names: Vec<&str> = existing
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        return Err(Error::ShardConflict {
            table,
            existing: names.join(", "),
        });
    }
    conn.execute_batch(&ddl)
        .map_err(Error::duckdb(format!("creating shard table {table}")))?;
    Ok(true)
}

/// Drops the shard table of `target`; returns whether it existed.
pub fn drop_shard(conn: &Connection, target: &ShardTarget) -> Result<bool> {
    let table = table_name(target)?;
    let existed = table_exists(conn, &table)?;
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote_ident(&table)))
        .map_err(Error::duckdb(format!("dropping shard table {table}")))?;
    Ok(existed)
}

/// Row count and size of the shard table of `target`.
///
/// `rows` is exact (`count(*)`). `bytes` estimates the size of the rows in
/// Arrow memory format, i.e. what a full scan of the shard ships:
/// fixed-width values at their width, booleans as bits, strings and blobs
/// as their byte length plus a 4-byte offset, nested values by the length
/// of their text form; validity bitmaps are not counted. It is not the
/// compressed size on disk. Computing it reads the variable-width columns.
pub fn shard_stats(conn: &Connection, target: &ShardTarget) -> Result<ShardStat> {
    let table = table_name(target)?;
    if !table_exists(conn, &table)? {
        return Ok(ShardStat {
            target: Some(target.clone()),
            rows: 0,
            bytes: 0,
            exists: false,
        });
    }
    let schema = table_schema(conn, &table)?;
    let mut fixed_width: u64 = 0; // bytes per row of fixed-width columns
    let mut bool_columns: u64 = 0;
    let mut measures = vec!["count(*)".to_string()];
    for field in schema.fields() {
        let col = quote_ident(field.name());
        let dt = field.data_type();
        if let Some(width) = dt.primitive_width() {
            fixed_width += width as u64;
        } else if *dt == DataType::Boolean {
            bool_columns += 1;
        } else {
            let len = match dt {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    format!("strlen({col})")
                }
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                    format!("octet_length({col})")
                }
                _ => format!("strlen(CAST({col} AS VARCHAR))"),
            };
            measures.push(format!("CAST(coalesce(sum({len}), 0) AS BIGINT)"));
        }
    }
    let sql = format!(
        "SELECT {} FROM {}",
        measures.join(", "),
        quote_ident(&table)
    );
    let values: Vec<i64> = conn
        .query_row(&sql, [], |row| {
            (0..measures.len()).map(|i| row.get::<_, i64>(i)).collect()
        })
        .map_err(Error::duckdb(format!("measuring shard table {table}")))?;
    let as_u64 = |v: &i64| u64::try_from(*v).unwrap_or(0);
    let rows = values.first().map(as_u64).unwrap_or(0);
    let variable: u64 = values.iter().skip(1).map(as_u64).sum();
    let offsets = 4 * rows * (values.len().saturating_sub(1) as u64);
    let bytes = rows * fixed_width + (rows * bool_columns).div_ceil(8) + variable + offsets;
    Ok(ShardStat {
        target: Some(target.clone()),
        rows,
        bytes,
        exists: true,
    })
}

// ---------------------------------------------------------------------------
// Appends

/// What the receiving side of a DoPut hands to [`append`].
#[derive(Debug)]
pub enum AppendMessage {
    /// Rows to append.
    Batch(RecordBatch),
    /// The client sent every row: append them all into the open
    /// transaction (errors surface here) and report the count.
    Prepare,
    /// The client decided: commit.
    Commit,
}

/// Appends every batch from `input` to the shard table of `target` in one
/// transaction, committed when [`AppendMessage::Commit`] arrives. On
/// [`AppendMessage::Prepare`] the rows are flushed into the transaction and
/// `prepared` is called with their count. Any error, or `input` closing
/// without `Commit`, rolls everything back. Returns the number of rows
/// written.
pub fn append(
    conn: &Connection,
    target: &ShardTarget,
    next: impl FnMut() -> Option<AppendMessage>,
    prepared: impl FnMut(u64),
) -> Result<u64> {
    let table = table_name(target)?;
    if !table_exists(conn, &table)? {
        return Err(Error::ShardNotFound { table });
    }
    let schema = table_schema(conn, &table)?;
    conn.execute_batch("BEGIN TRANSACTION")
        .map_err(Error::duckdb("starting the append transaction"))?;
    match append_all(conn, &table, &schema, next, prepared) {
        Ok(rows) => {
            conn.execute_batch("COMMIT")
                .map_err(Error::duckdb(format!("committing the append to {table}")))?;
            Ok(rows)
        }
        Err(e) => {
            if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                tracing::warn!(table, "rolling back a failed append: {rollback}");
            }
            Err(e)
        }
    }
}

/// The body of [`append`], inside its transaction. The appender is flushed
/// (and dropped) before the caller commits or rolls back.
fn append_all(
    conn: &Connection,
    table: &str,
    schema: &SchemaRef,
    mut next: impl FnMut() -> Option<AppendMessage>,
    mut prepared: impl FnMut(u64),
) -> Result<u64> {
    let mut appender = conn
        .appender(table)
        .map_err(Error::duckdb(format!("opening an appender on {table}")))?;
    let mut rows = 0u64;
    let mut flushed = false;
    loop {
        match next() {
            Some(AppendMessage::Batch(_)) if flushed => {
                return Err(Error::BadRequest(format!(
                    "the write to {table} sent rows after PREPARE; nothing was written"
                )));
            }
            Some(AppendMessage::Batch(batch)) => {
                if batch.num_rows() == 0 {
                    continue;
                }
                let batch = null_safe_intervals(conform_input(batch, schema, table)?)?;
                rows += batch.num_rows() as u64;
                appender
                    .append_record_batch(batch)
                    .map_err(Error::duckdb(format!("appending to {table}")))?;
            }
            Some(AppendMessage::Prepare) => {
                appender
                    .flush()
                    .map_err(Error::duckdb(format!("appending to {table}")))?;
                flushed = true;
                prepared(rows);
            }
            Some(AppendMessage::Commit) => {
                appender
                    .flush()
                    .map_err(Error::duckdb(format!("appending to {table}")))?;
                return Ok(rows);
            }
            None => {
                return Err(Error::Cancelled(format!(
                    "the write to {table} ended before the client committed it; nothing was written"
                )));
            }
        }
    }
}

/// duckdb-rs' Arrow appender drops the nulls of interval columns (they
/// become `0 secs`). Interval columns holding nulls travel as text instead
/// (`M months D days U microseconds`), which DuckDB's appender casts to the
/// `INTERVAL` column, nulls included.
fn null_safe_intervals(batch: RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::IntervalMonthDayNanoType;
    let needs = |c: &ArrayRef| {
        matches!(c.data_type(), DataType::Interval(_) | DataType::Duration(_)) && c.null_count() > 0
    };
    if !batch.columns().iter().any(needs) {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !needs(column) {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        let mdn = cast_with_options(
            column,
            &DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
            &STRICT,
        )
        .map_err(|e| Error::BadRequest(format!("column {}: {e}", field.name())))?;
        let text: StringArray = mdn
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .map(|v| {
                v.map(|v| {
                    format!(
                        "{} months {} days {} microseconds",
                        v.months,
                        v.days,
                        v.nanoseconds / 1000
                    )
                })
            })
            .collect();
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
        columns.push(Arc::new(text) as ArrayRef);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::BadRequest(e.to_string()))
}

/// Casts an incoming batch by position to the shard table's columns.
fn conform_input(batch: RecordBatch, schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(Error::BadRequest(format!(
            "the written batch has {} columns, shard table {table} has {} ({})",
            batch.num_columns(),
            schema.fields().len(),
            names.join(", ")
        )));
    }
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let num_rows = batch.num_rows();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (index, (column, field)) in batch.columns().iter().zip(schema.fields()).enumerate() {
        columns.push(if column.data_type() == field.data_type() {
            Arc::clone(column)
        } else {
            cast_with_options(column, field.data_type(), &STRICT).map_err(|source| {
                Error::InputCast {
                    index,
                    column: field.name().clone(),
                    to: field.data_type().clone(),
                    source,
                }
            })?
        });
    }
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(num_rows)),
    )
    .map_err(|e| Error::BadRequest(format!("the written batch does not fit {table}: {e}")))
}

// ---------------------------------------------------------------------------
// Queries

/// Counters of one fragment run.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueryStats {
    pub rows: u64,
    pub batches: u64,
    /// The consumer stopped taking batches before the result ended.
    pub abandoned: bool,
}

/// Runs `sql` with DuckDB's streaming result and hands each batch, cast by
/// position to `expected` (names, types and metadata), to `sink`.
///
/// `ready` is called once the statement has been prepared and started, so
/// that planning errors can be reported before any data; the run stops
/// early if `ready` or `sink` return `false` (the consumer went away). Only
/// one chunk of the result is held at a time.
pub fn run_query(
    conn: &Connection,
    sql: &str,
    expected: &SchemaRef,
    ready: impl FnOnce() -> bool,
    mut sink: impl FnMut(RecordBatch) -> bool,
) -> Result<QueryStats> {
    let started = Instant::now();
    let mut stats = QueryStats::default();
    let mut stmt = conn
        .prepare(sql)
        .map_err(Error::duckdb("planning the fragment"))?;
    let columns = {
        let stream = stmt
            .stream_arrow([])
            .map_err(Error::duckdb("running the fragment"))?;
        stream.get_schema().fields().len()
    };
    // A zero-column fragment (rows only counted above it) returns one
    // placeholder column, dropped in `conform_result`.
    let placeholder = expected.fields().is_empty() && columns == 1;
    if columns != expected.fields().len() && !placeholder {
        return Err(Error::ResultShape(format!(
            "the fragment returns {columns} columns, the ticket expects {}",
            expected.fields().len()
        )));
    }
    if !ready() {
        stats.abandoned = true;
        return Ok(stats);
    }
    // `step` (unlike the `ArrowStream` iterator) reports fetch errors,
    // including an interrupt, instead of panicking.
    while let Some(chunk) = stmt.step().map_err(Error::duckdb("running the fragment"))? {
        if chunk.is_empty() {
            continue;
        }
        let batch = conform_result(chunk, expected)?;
        stats.rows += batch.num_rows() as u64;
        stats.batches += 1;
        if !sink(batch) {
            stats.abandoned = true;
            break;
        }
    }
    tracing::debug!(
        rows = stats.rows,
        batches = stats.batches,
        abandoned = stats.abandoned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "fragment finished"
    );
    Ok(stats)
}

/// Turns one DuckDB result chunk into a batch of exactly `expected`.
fn conform_result(chunk: StructArray, expected: &SchemaRef) -> Result<RecordBatch> {
    let num_rows = chunk.len();
    let (fields, mut columns, nulls) = chunk.into_parts();
    if nulls.is_some_and(|n| n.null_count() > 0) {
        return Err(Error::ResultShape("DuckDB returned null rows".into()));
    }
    if expected.fields().is_empty() && columns.len() == 1 {
        // The placeholder column of a zero-column fragment.
        columns.clear();
    }
    if columns.len() != expected.fields().len() {
        return Err(Error::ResultShape(format!(
            "a result chunk has {} columns, the ticket expects {}",
            columns.len(),
            expected.fields().len()
        )));
    }
    let mut out: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (index, ((column, field), from)) in columns
        .into_iter()
        .zip(expected.fields())
        .zip(fields.iter())
        .enumerate()
    {
        out.push(if column.data_type() == field.data_type() {
            column
        } else {
            cast_with_options(&column, field.data_type(), &STRICT).map_err(|source| {
                Error::ResultCast {
                    index,
                    column: field.name().clone(),
                    from: from.data_type().clone(),
                    to: field.data_type().clone(),
                    source,
                }
            })?
        });
    }
    RecordBatch::try_new_with_options(
        Arc::clone(expected),
        out,
        &RecordBatchOptions::new().with_row_count(Some(num_rows)),
    )
    .map_err(|e| Error::ResultShape(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{Fields, TimeUnit};

    fn memory() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    fn target(table: &str, shard: u32) -> ShardTarget {
        ShardTarget {
            table: table.into(),
            shard,
            reference: false,
        }
    }

    #[test]
    fn resource_usage_reads_duckdb_memory() {
        let conn = memory();
        let empty = resource_usage(&conn).unwrap();
        assert_eq!(empty.shard_tables, 0);
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        create_shard(&conn, &target("t", 0), &schema).unwrap();
        create_shard(&conn, &target("t", 12), &schema).unwrap();
        create_shard(
            &conn,
            &ShardTarget {
                table: "r".into(),
                shard: 0,
                reference: true,
            },
            &schema,
        )
        .unwrap();
        conn.execute_batch(
            "CREATE TABLE not_a_shard(a INT); \
             INSERT INTO t__s0 SELECT range FROM range(200000)",
        )
        .unwrap();
        let usage = resource_usage(&conn).unwrap();
        assert_eq!(usage.shard_tables, 3);
        assert!(usage.memory_bytes > 0, "{usage:?}");
    }

    #[test]
    fn column_types() {
        let ty = |dt: DataType| column_type(&Field::new("c", dt, true));
        assert_eq!(ty(DataType::Int64).unwrap(), "BIGINT");
        assert_eq!(ty(DataType::UInt16).unwrap(), "USMALLINT");
        assert_eq!(ty(DataType::Utf8View).unwrap(), "VARCHAR");
        assert_eq!(ty(DataType::LargeBinary).unwrap(), "BLOB");
        assert_eq!(ty(DataType::Decimal128(12, 2)).unwrap(), "DECIMAL(12,2)");
        assert_eq!(
            ty(DataType::Timestamp(TimeUnit::Millisecond, None)).unwrap(),
            "TIMESTAMP_MS"
        );
        assert_eq!(
            ty(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            ))
            .unwrap(),
            "TIMESTAMPTZ"
        );
        assert_eq!(
            ty(DataType::new_list(DataType::Int32, true)).unwrap(),
            "INTEGER[]"
        );
        let st = DataType::Struct(Fields::from(vec![
            Field::new("a b", DataType::Int32, true),
            Field::new("c", DataType::Utf8, true),
        ]));
        assert_eq!(ty(st).unwrap(), "STRUCT(\"a b\" INTEGER, \"c\" VARCHAR)");
        let err = ty(DataType::Decimal128(39, 2)).unwrap_err();
        assert!(err.to_string().contains("\"c\""), "{err}");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(ty(DataType::Null).is_err());
    }

    #[test]
    fn every_supported_type_creates_a_column() {
        use arrow::datatypes::IntervalUnit;
        let conn = memory();
        let schema = Schema::new(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("i8", DataType::Int8, true),
            Field::new("u64", DataType::UInt64, true),
            Field::new("f", DataType::Float32, true),
            Field::new("s", DataType::LargeUtf8, true),
            Field::new("bin", DataType::Binary, true),
            Field::new("d", DataType::Date32, true),
            Field::new("t", DataType::Time64(TimeUnit::Microsecond), true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("dec", DataType::Decimal128(38, 10), true),
            Field::new("iv", DataType::Interval(IntervalUnit::MonthDayNano), true),
            Field::new("l", DataType::new_list(DataType::Utf8, true), true),
        ]);
        let t = target("all_types", 0);
        assert!(create_shard(&conn, &t, &schema).unwrap());
        let stored = table_schema(&conn, "all_types__s0").unwrap();
        assert_eq!(stored.fields().len(), schema.fields().len());
        // Idempotent.
        assert!(!create_shard(&conn, &t, &schema).unwrap());
    }

    /// Every Arrow type of the documented mapping (docs/types.md) is stored
    /// in its DuckDB column and read back as exactly the same Arrow values.
    #[test]
    fn every_mapped_type_round_trips() {
        use arrow::array::*;
        use arrow::datatypes::IntervalMonthDayNano;
        let conn = memory();
        let mark = |f: Field, ty: &str| {
            f.with_metadata([(DUCKDB_TYPE_KEY.to_string(), ty.to_string())].into())
        };
        let map_type = DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", DataType::Utf8, false),
                    Field::new("value", DataType::Int32, true),
                ])),
                false,
            )),
            false,
        );
        let struct_fields = Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let schema = Arc::new(Schema::new(vec![
            mark(
                Field::new("h", DataType::Decimal128(38, 0), true),
                "HUGEINT",
            ),
            mark(
                Field::new("uh", DataType::Decimal128(38, 0), true),
                "UHUGEINT",
            ),
            mark(Field::new("u", DataType::Utf8, true), "UUID"),
            Field::new("u64", DataType::UInt64, true),
            Field::new("tm", DataType::Time64(TimeUnit::Microsecond), true),
            Field::new("ts_s", DataType::Timestamp(TimeUnit::Second, None), true),
            Field::new(
                "ts_ns",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "iv",
                DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
                true,
            ),
            Field::new("l", DataType::new_list(DataType::Utf8, true), true),
            Field::new("st", DataType::Struct(struct_fields.clone()), true),
            Field::new("m", map_type, true),
        ]));
        let t = target("typed", 0);
        create_shard(&conn, &t, &schema).unwrap();
        let types: Vec<String> = conn
            .prepare(
                "SELECT data_type FROM duckdb_columns() WHERE table_name = 'typed__s0' \
                 ORDER BY column_index",
            )
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(&types[..3], ["HUGEINT", "UHUGEINT", "UUID"]);

        let big = 10i128.pow(38) - 1;
        let mut map = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
        map.keys().append_value("k");
        map.values().append_value(1);
        map.append(true).unwrap();
        map.append(false).unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                Decimal128Array::from(vec![Some(-big), None])
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(big), None])
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
            ),
            Arc::new(StringArray::from(vec![
                Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                None,
            ])),
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), None])),
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(86_399_999_999),
                None,
            ])),
            Arc::new(TimestampSecondArray::from(vec![Some(-1), None])),
            Arc::new(TimestampNanosecondArray::from(vec![Some(-1), None])),
            Arc::new(TimestampMicrosecondArray::from(vec![Some(-1), None]).with_timezone("UTC")),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(14, -3, 1_000)),
                None,
            ])),
            Arc::new(ListArray::from_iter_primitive::<
                arrow::datatypes::Int32Type,
                _,
                _,
            >(vec![Some(vec![Some(1)]), None])),
            Arc::new(StructArray::new(
                struct_fields,
                vec![
                    Arc::new(Int32Array::from(vec![Some(1), None])),
                    Arc::new(StringArray::from(vec![Some("x"), None])),
                ],
                Some(vec![true, false].into()),
            )),
            Arc::new(map.finish()),
        ];
        // The list column is built from Int32 and cast to VARCHAR[] on append.
        let input_schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(input_schema, columns).unwrap();
        let mut input = vec![AppendMessage::Batch(batch), AppendMessage::Commit].into_iter();
        assert_eq!(append(&conn, &t, || input.next(), |_| {}).unwrap(), 2);

        let mut got = Vec::new();
        run_query(
            &conn,
            "SELECT * FROM typed__s0",
            &schema,
            || true,
            |b| {
                got.push(b);
                true
            },
        )
        .unwrap();
        let got = arrow::compute::concat_batches(&schema, &got).unwrap();
        assert_eq!(got.schema(), schema);
        let text = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(&got))
            .unwrap()
            .to_string();
        assert!(
            text.contains("-99999999999999999999999999999999999999"),
            "{text}"
        );
        assert!(
            text.contains("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            "{text}"
        );
        assert!(text.contains("23:59:59.999999"), "{text}");
        assert!(text.contains("1969-12-31T23:59:59.999999999"), "{text}");
        assert!(text.contains("{k: 1}"), "{text}");
        for (i, c) in got.columns().iter().enumerate() {
            assert_eq!(c.null_count(), 1, "column {i}: {text}");
        }
    }

    #[test]
    fn create_conflict_and_drop() {
        let conn = memory();
        let t = target("t", 1);
        let a = Schema::new(vec![Field::new("a", DataType::Int32, false)]);
        let b = Schema::new(vec![Field::new("b", DataType::Int32, false)]);
        assert!(create_shard(&conn, &t, &a).unwrap());
        let err = create_shard(&conn, &t, &b).unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        assert!(drop_shard(&conn, &t).unwrap());
        assert!(!drop_shard(&conn, &t).unwrap());
        assert!(!table_exists(&conn, "t__s1").unwrap());
    }

    #[test]
    fn append_commits_or_rolls_back() {
        let conn = memory();
        let t = target("t", 0);
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        create_shard(&conn, &t, &schema).unwrap();
        // Int32 input is cast to the BIGINT column.
        let batch = |n: i32| {
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new("x", DataType::Int32, true),
                    Field::new("y", DataType::Utf8, true),
                ])),
                vec![
                    Arc::new(Int32Array::from((0..n).collect::<Vec<_>>())),
                    Arc::new(StringArray::from(
                        (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap()
        };
        let mut input = vec![
            AppendMessage::Batch(batch(3)),
            AppendMessage::Batch(batch(4000)),
            AppendMessage::Commit,
        ]
        .into_iter();
        assert_eq!(append(&conn, &t, || input.next(), |_| {}).unwrap(), 4003);

        // Cut off before Commit: nothing lands.
        let mut input = vec![AppendMessage::Batch(batch(10))].into_iter();
        let err = append(&conn, &t, || input.next(), |_| {}).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Cancelled);

        // Prepared (the count is reported), then cut off: nothing lands.
        let mut input = vec![AppendMessage::Batch(batch(7)), AppendMessage::Prepare].into_iter();
        let mut prepared = None;
        let err = append(&conn, &t, || input.next(), |rows| prepared = Some(rows)).unwrap_err();
        assert_eq!(prepared, Some(7));
        assert_eq!(err.code(), tonic::Code::Cancelled);

        // A null in a NOT NULL column: nothing of the write lands.
        let bad = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("x", DataType::Int64, true),
                Field::new("y", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let mut input = vec![
            AppendMessage::Batch(batch(5)),
            AppendMessage::Batch(bad),
            AppendMessage::Commit,
        ]
        .into_iter();
        let err = append(&conn, &t, || input.next(), |_| {}).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

        let stat = shard_stats(&conn, &t).unwrap();
        assert!(stat.exists);
        assert_eq!(stat.rows, 4003);
        assert!(stat.bytes >= 4003 * 8, "{}", stat.bytes);

        let missing = shard_stats(&conn, &target("nope", 0)).unwrap();
        assert!(!missing.exists);
    }

    #[test]
    fn query_casts_to_expected_schema() {
        let conn = memory();
        let expected = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("label", DataType::Utf8View, true),
        ]));
        let mut batches = Vec::new();
        let stats = run_query(
            &conn,
            "SELECT i::INTEGER AS c0, 'x' || i AS c1 FROM range(5000) t(i)",
            &expected,
            || true,
            |b| {
                batches.push(b);
                true
            },
        )
        .unwrap();
        assert_eq!(stats.rows, 5000);
        assert!(batches.iter().all(|b| b.schema() == expected));

        // Empty results are fine.
        let stats = run_query(
            &conn,
            "SELECT 1::BIGINT AS c0, 'a' AS c1 WHERE false",
            &expected,
            || true,
            |_| true,
        )
        .unwrap();
        assert_eq!(stats.rows, 0);

        // Wrong arity is reported, not panicked on.
        let err = run_query(&conn, "SELECT 1", &expected, || true, |_| true).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);

        // A missing table is NOT_FOUND.
        let err = run_query(
            &conn,
            "SELECT * FROM \"gone__s0\"",
            &expected,
            || true,
            |_| true,
        )
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

        // The consumer leaving stops the query.
        let stats = run_query(
            &conn,
            "SELECT i AS c0, 'x' AS c1 FROM range(1000000) t(i)",
            &expected,
            || true,
            |_| false,
        )
        .unwrap();
        assert!(stats.abandoned);
        assert!(stats.rows < 1000000);
    }

    #[test]
    fn worker_id_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_worker_id(dir.path()).unwrap();
        let b = load_or_create_worker_id(dir.path()).unwrap();
        assert_eq!(a, b);
        std::fs::write(dir.path().join(WORKER_ID_FILE), "worker-7\n").unwrap();
        assert_eq!(load_or_create_worker_id(dir.path()).unwrap(), "worker-7");
    }

    #[test]
    fn one_storage_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = WorkerConfig::new(dir.path(), "secret");
        let first = Storage::open(&config).unwrap();
        assert!(Storage::open(&config).is_err());
        drop(first);
        let again = Storage::open(&config).unwrap();
        assert!(again.connect().is_ok());
        again.close();
        assert!(matches!(again.connect(), Err(Error::ShuttingDown)));
    }
}
