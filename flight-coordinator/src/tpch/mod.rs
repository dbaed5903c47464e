//! TPC-H: data generation, the cluster DDL and the 22 benchmark queries.
//!
//! Data comes from the [`tpchgen`] crate (a port of the official `dbgen`); rows are
//! turned into Arrow [`RecordBatch`]es column by column, without going through text.
//!
//! # Types
//!
//! | TPC-H datatype | Arrow | SQL |
//! | --- | --- | --- |
//! | identifier (every `*key` column) | `Int64` | `BIGINT` |
//! | integer (`l_linenumber`, `p_size`, `ps_availqty`, `o_shippriority`) | `Int32` | `INTEGER` |
//! | decimal (money, `l_quantity`, `l_discount`, `l_tax`) | `Decimal128(15, 2)` | `DECIMAL(15,2)` |
//! | date | `Date32` | `DATE` |
//! | fixed / variable text | `Utf8` | `VARCHAR` |
//!
//! Every column is `NOT NULL`. `l_quantity` is an integer in `dbgen` but a decimal in the
//! specification; it is generated as `Decimal128(15, 2)` (e.g. `17.00`) as DuckDB's `tpch`
//! extension does.
//!
//! # Splitting generation
//!
//! [`generate_part`] produces part `part` of `parts` (1-based) of a table; the union of
//! all parts is exactly the table [`generate`] produces, so generation can be spread over
//! threads or processes. `nation` and `region` are tiny and come whole in part 1 (the other
//! parts are empty). `lineitem` is split by order, like `orders`.
//!
//! # Queries
//!
//! [`query`] returns the 22 queries with the validation substitution parameters (the ones
//! in the TPC-H specification's "validation" column and DuckDB's `tpch` extension; Q11's
//! fraction is the fixed `0.0001` DuckDB uses rather than `0.0001 / SF`). They are written
//! in SQL that both DuckDB and Apache DataFusion parse: `date '...' + interval 'n' unit`,
//! `extract(year from ...)`, `substring(x from 1 for 2)`, Q15's view as a CTE, derived-table
//! column names given as select-list aliases, and literal ranges written out
//! (`between 0.05 and 0.07` instead of `between 0.06 - 0.01 and 0.06 + 0.01`, which
//! DataFusion evaluates in `f64`, wrongly excluding `0.07`).

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tpchgen::dates::TPCHDate;
use tpchgen::decimal::TPCHDecimal;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};

/// The eight TPC-H tables, in load order (referenced tables first).
pub const TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

/// Precision of every TPC-H decimal column.
pub const DECIMAL_PRECISION: u8 = 15;
/// Scale of every TPC-H decimal column.
pub const DECIMAL_SCALE: i8 = 2;

/// A boxed stream of generated batches.
pub type BatchIter = Box<dyn Iterator<Item = RecordBatch> + Send>;

const DEC: DataType = DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE);

fn build_schema(cols: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(name, ty)| Field::new(*name, ty.clone(), false))
            .collect::<Vec<_>>(),
    ))
}

static SCHEMAS: LazyLock<[SchemaRef; 8]> = LazyLock::new(|| {
    use DataType::{Date32, Int32, Int64, Utf8};
    [
        build_schema(&[
            ("n_nationkey", Int64),
            ("n_name", Utf8),
            ("n_regionkey", Int64),
            ("n_comment", Utf8),
        ]),
        build_schema(&[
            ("r_regionkey", Int64),
            ("r_name", Utf8),
            ("r_comment", Utf8),
        ]),
        build_schema(&[
            ("p_partkey", Int64),
            ("p_name", Utf8),
            ("p_mfgr", Utf8),
            ("p_brand", Utf8),
            ("p_type", Utf8),
            ("p_size", Int32),
            ("p_container", Utf8),
            ("p_retailprice", DEC),
            ("p_comment", Utf8),
        ]),
        build_schema(&[
            ("s_suppkey", Int64),
            ("s_name", Utf8),
            ("s_address", Utf8),
            ("s_nationkey", Int64),
            ("s_phone", Utf8),
            ("s_acctbal", DEC),
            ("s_comment", Utf8),
        ]),
        build_schema(&[
            ("ps_partkey", Int64),
            ("ps_suppkey", Int64),
            ("ps_availqty", Int32),
            ("ps_supplycost", DEC),
            ("ps_comment", Utf8),
        ]),
        build_schema(&[
            ("c_custkey", Int64),
            ("c_name", Utf8),
            ("c_address", Utf8),
            ("c_nationkey", Int64),
            ("c_phone", Utf8),
            ("c_acctbal", DEC),
            ("c_mktsegment", Utf8),
            ("c_comment", Utf8),
        ]),
        build_schema(&[
            ("o_orderkey", Int64),
            ("o_custkey", Int64),
            ("o_orderstatus", Utf8),
            ("o_totalprice", DEC),
            ("o_orderdate", Date32),
            ("o_orderpriority", Utf8),
            ("o_clerk", Utf8),
            ("o_shippriority", Int32),
            ("o_comment", Utf8),
        ]),
        build_schema(&[
            ("l_orderkey", Int64),
            ("l_partkey", Int64),
            ("l_suppkey", Int64),
            ("l_linenumber", Int32),
            ("l_quantity", DEC),
            ("l_extendedprice", DEC),
            ("l_discount", DEC),
            ("l_tax", DEC),
            ("l_returnflag", Utf8),
            ("l_linestatus", Utf8),
            ("l_shipdate", Date32),
            ("l_commitdate", Date32),
            ("l_receiptdate", Date32),
            ("l_shipinstruct", Utf8),
            ("l_shipmode", Utf8),
            ("l_comment", Utf8),
        ]),
    ]
});

fn table_index(table: &str) -> Option<usize> {
    TABLES.iter().position(|t| t.eq_ignore_ascii_case(table))
}

/// The Arrow schema of a TPC-H table (all fields non-nullable), `None` for other names.
pub fn schema(table: &str) -> Option<SchemaRef> {
    table_index(table).map(|i| Arc::clone(&SCHEMAS[i]))
}

/// The SQL type name used in DDL for an Arrow type of the TPC-H schemas
/// (`BIGINT`, `INTEGER`, `DECIMAL(p,s)`, `DATE`, `VARCHAR`).
pub fn sql_type(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Int64 => "BIGINT".to_string(),
        DataType::Int32 => "INTEGER".to_string(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Date32 => "DATE".to_string(),
        DataType::Utf8 => "VARCHAR".to_string(),
        _ => return None,
    })
}

/// The column list of a table's DDL: `(col TYPE NOT NULL, ...)`.
fn column_list(schema: &Schema) -> String {
    let mut out = String::from("(");
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let ty = sql_type(f.data_type()).unwrap_or_else(|| "VARCHAR".to_string());
        let _ = write!(out, "{} {} NOT NULL", f.name(), ty);
    }
    out.push(')');
    out
}

/// How the TPC-H tables are placed in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `orders` and `lineitem` hash-distributed and co-located on the order
    /// key; every other table a reference table, so every join with them
    /// runs on the shards. The demo's and the benchmarks' default.
    #[default]
    Star,
    /// Also `customer` (on its key) and `part`/`partsupp` (co-located on
    /// the part key) distributed: joins between them and the order tables
    /// are computed on the coordinator. Exercises the gather paths.
    Distributed,
}

/// How a TPC-H table is placed: `Some(column)` for a hash-distributed
/// table, `None` for a reference table (a full copy on every worker).
pub fn distribution_column(table: &str, layout: Layout) -> Option<&'static str> {
    match (table_index(table)?, layout) {
        (6, _) => Some("o_orderkey"),
        (7, _) => Some("l_orderkey"),
        (2, Layout::Distributed) => Some("p_partkey"),
        (4, Layout::Distributed) => Some("ps_partkey"),
        (5, Layout::Distributed) => Some("c_custkey"),
        _ => None,
    }
}

/// The cluster DDL for a TPC-H table, e.g.
/// `CREATE TABLE lineitem (l_orderkey BIGINT NOT NULL, ...) WITH (distribution = 'hash(l_orderkey)', shards = 8)`
/// or `CREATE TABLE nation (...) WITH (distribution = 'reference')`.
///
/// Every distributed table gets the same `shards` so co-located pairs line up.
/// Returns an empty string for a name that is not a TPC-H table.
pub fn create_table_sql(table: &str, shards: u32, layout: Layout) -> String {
    let Some(i) = table_index(table) else {
        return String::new();
    };
    let cols = column_list(&SCHEMAS[i]);
    match distribution_column(table, layout) {
        Some(col) => format!(
            "CREATE TABLE {} {cols} WITH (distribution = 'hash({col})', shards = {shards})",
            TABLES[i]
        ),
        None => format!(
            "CREATE TABLE {} {cols} WITH (distribution = 'reference')",
            TABLES[i]
        ),
    }
}

/// Plain DDL without cluster options: `CREATE TABLE name (col TYPE NOT NULL, ...)`
/// (for a single-node engine such as the DuckDB reference). Empty for an unknown table.
pub fn create_table_sql_plain(table: &str) -> String {
    match table_index(table) {
        Some(i) => format!("CREATE TABLE {} {}", TABLES[i], column_list(&SCHEMAS[i])),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

/// Generates a whole table at scale factor `sf` in batches of at most `batch_rows` rows.
pub fn generate(table: &str, sf: f64, batch_rows: usize) -> Result<BatchIter, String> {
    generate_part(table, sf, 1, 1, batch_rows)
}

/// Generates part `part` of `parts` (1-based) of a table. The parts are disjoint and
/// together make up exactly the table [`generate`] produces.
pub fn generate_part(
    table: &str,
    sf: f64,
    part: u32,
    parts: u32,
    batch_rows: usize,
) -> Result<BatchIter, String> {
    let idx = table_index(table).ok_or_else(|| format!("unknown TPC-H table '{table}'"))?;
    if !sf.is_finite() || sf <= 0.0 || sf > 100_000.0 {
        return Err(format!("invalid TPC-H scale factor {sf}"));
    }
    if parts == 0 || part == 0 || part > parts {
        return Err(format!(
            "invalid part {part} of {parts} (parts are 1-based)"
        ));
    }
    if batch_rows == 0 {
        return Err("batch_rows must be at least 1".to_string());
    }
    let to_i32 = |v: u32| i32::try_from(v).map_err(|_| format!("part count {v} too large"));
    let (p, n) = (to_i32(part)?, to_i32(parts)?);
    let schema = Arc::clone(&SCHEMAS[idx]);
    let it: BatchIter = match idx {
        0 => {
            let rows = NationGenerator::new(sf, 1, 1)
                .iter()
                .filter(move |_| part == 1);
            Box::new(Batches::new(rows, batch_rows, schema, NationCols::new))
        }
        1 => {
            let rows = RegionGenerator::new(sf, 1, 1)
                .iter()
                .filter(move |_| part == 1);
            Box::new(Batches::new(rows, batch_rows, schema, RegionCols::new))
        }
        2 => Box::new(Batches::new(
            PartGenerator::new(sf, p, n).iter(),
            batch_rows,
            schema,
            PartCols::new,
        )),
        3 => Box::new(Batches::new(
            SupplierGenerator::new(sf, p, n).iter(),
            batch_rows,
            schema,
            SupplierCols::new,
        )),
        4 => Box::new(Batches::new(
            PartSuppGenerator::new(sf, p, n).iter(),
            batch_rows,
            schema,
            PartSuppCols::new,
        )),
        5 => Box::new(Batches::new(
            CustomerGenerator::new(sf, p, n).iter(),
            batch_rows,
            schema,
            CustomerCols::new,
        )),
        6 => Box::new(Batches::new(
            OrderGenerator::new(sf, p, n).iter(),
            batch_rows,
            schema,
            OrderCols::new,
        )),
        _ => Box::new(Batches::new(
            LineItemGenerator::new(sf, p, n).iter(),
            batch_rows,
            schema,
            LineItemCols::new,
        )),
    };
    Ok(it)
}

/// Column builders for one table: one row at a time in, one set of arrays out.
trait Columns<R> {
    fn push(&mut self, row: R);
    fn finish(&mut self) -> Vec<ArrayRef>;
}

/// Pulls up to `batch_rows` rows from a row generator into column builders per batch.
struct Batches<I, C> {
    rows: I,
    batch_rows: usize,
    schema: SchemaRef,
    new_cols: fn(usize) -> C,
}

impl<I, C> Batches<I, C> {
    fn new(rows: I, batch_rows: usize, schema: SchemaRef, new_cols: fn(usize) -> C) -> Self {
        Self {
            rows,
            batch_rows,
            schema,
            new_cols,
        }
    }
}

impl<I, R, C> Iterator for Batches<I, C>
where
    I: Iterator<Item = R>,
    C: Columns<R>,
{
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        let first = self.rows.next()?;
        let mut cols = (self.new_cols)(self.batch_rows);
        cols.push(first);
        for row in self.rows.by_ref().take(self.batch_rows - 1) {
            cols.push(row);
        }
        match RecordBatch::try_new(Arc::clone(&self.schema), cols.finish()) {
            Ok(batch) => Some(batch),
            // The builders match the schema by construction (checked by the unit tests for
            // every table); a failure here is a bug in this module, not a data condition.
            Err(e) => panic!("TPC-H batch does not match its schema: {e}"),
        }
    }
}

fn dec_builder(n: usize) -> Decimal128Builder {
    Decimal128Builder::with_capacity(n).with_data_type(DEC)
}

fn str_builder(n: usize, avg_len: usize) -> StringBuilder {
    StringBuilder::with_capacity(n, n * avg_len)
}

#[inline]
fn dec(v: TPCHDecimal) -> i128 {
    i128::from(v.into_inner())
}

#[inline]
fn date(v: TPCHDate) -> i32 {
    v.to_unix_epoch()
}

/// Appends the `Display` form of `v` as one string value, without an intermediate `String`.
#[inline]
fn push_display(b: &mut StringBuilder, v: impl std::fmt::Display) {
    // Writing into a StringBuilder cannot fail.
    let _ = write!(b, "{v}");
    b.append_value("");
}

fn arr<T: arrow::array::Array + 'static>(a: T) -> ArrayRef {
    Arc::new(a)
}

struct NationCols {
    key: Int64Builder,
    name: StringBuilder,
    region: Int64Builder,
    comment: StringBuilder,
}

impl NationCols {
    fn new(n: usize) -> Self {
        Self {
            key: Int64Builder::with_capacity(n),
            name: str_builder(n, 12),
            region: Int64Builder::with_capacity(n),
            comment: str_builder(n, 80),
        }
    }
}

impl Columns<tpchgen::generators::Nation<'_>> for NationCols {
    fn push(&mut self, r: tpchgen::generators::Nation<'_>) {
        self.key.append_value(r.n_nationkey);
        self.name.append_value(r.n_name);
        self.region.append_value(r.n_regionkey);
        self.comment.append_value(r.n_comment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            arr(self.key.finish()),
            arr(self.name.finish()),
            arr(self.region.finish()),
            arr(self.comment.finish()),
        ]
    }
}

struct RegionCols {
    key: Int64Builder,
    name: StringBuilder,
    comment: StringBuilder,
}

impl RegionCols {
    fn new(n: usize) -> Self {
        Self {
            key: Int64Builder::with_capacity(n),
            name: str_builder(n, 12),
            comment: str_builder(n, 80),
        }
    }
}

impl Columns<tpchgen::generators::Region<'_>> for RegionCols {
    fn push(&mut self, r: tpchgen::generators::Region<'_>) {
        self.key.append_value(r.r_regionkey);
        self.name.append_value(r.r_name);
        self.comment.append_value(r.r_comment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            arr(self.key.finish()),
            arr(self.name.finish()),
            arr(self.comment.finish()),
        ]
    }
}

struct PartCols {
    key: Int64Builder,
    name: StringBuilder,
    mfgr: StringBuilder,
    brand: StringBuilder,
    ty: StringBuilder,
    size: Int32Builder,
    container: StringBuilder,
    price: Decimal128Builder,
    comment: StringBuilder,
}

impl PartCols {
    fn new(n: usize) -> Self {
        Self {
            key: Int64Builder::with_capacity(n),
            name: str_builder(n, 36),
            mfgr: str_builder(n, 14),
            brand: str_builder(n, 8),
            ty: str_builder(n, 22),
            size: Int32Builder::with_capacity(n),
            container: str_builder(n, 8),
            price: dec_builder(n),
            comment: str_builder(n, 14),
        }
    }
}

impl Columns<tpchgen::generators::Part<'_>> for PartCols {
    fn push(&mut self, r: tpchgen::generators::Part<'_>) {
        self.key.append_value(r.p_partkey);
        push_display(&mut self.name, &r.p_name);
        push_display(&mut self.mfgr, r.p_mfgr);
        push_display(&mut self.brand, r.p_brand);
        self.ty.append_value(r.p_type);
        self.size.append_value(r.p_size);
        self.container.append_value(r.p_container);
        self.price.append_value(dec(r.p_retailprice));
        self.comment.append_value(r.p_comment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            arr(self.key.finish()),
            arr(self.name.finish()),
            arr(self.mfgr.finish()),
            arr(self.brand.finish()),
            arr(self.ty.finish()),
            arr(self.size.finish()),
            arr(self.container.finish()),
            arr(self.price.finish()),
            arr(self.comment.finish()),
        ]
    }
}

struct SupplierCols {
    key: Int64Builder,
    name: StringBuilder,
    address: StringBuilder,
    nation: Int64Builder,
    phone: StringBuilder,
    acctbal: Decimal128Builder,
    comment: StringBuilder,
}

impl SupplierCols {
    fn new(n: usize) -> Self {
        Self {
            key: Int64Builder::with_capacity(n),
            name: str_builder(n, 18),
            address: str_builder(n, 25),
            nation: Int64Builder::with_capacity(n),
            phone: str_builder(n, 15),
            acctbal: dec_builder(n),
            comment: str_builder(n, 63),
        }
    }
}

impl Columns<tpchgen::generators::Supplier> for SupplierCols {
    fn push(&mut self, r: tpchgen::generators::Supplier) {
        self.key.append_value(r.s_suppkey);
        push_display(&mut self.name, r.s_name);
        push_display(&mut self.address, &r.s_address);
        self.nation.append_value(r.s_nationkey);
        push_display(&mut self.phone, &r.s_phone);
        self.acctbal.append_value(dec(r.s_acctbal));
        self.comment.append_value(&r.s_comment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            arr(self.key.finish()),
            arr(self.name.finish()),
            arr(self.address.finish()),
            arr(self.nation.finish()),
            arr(self.phone.finish()),
            arr(self.acctbal.finish()),
            arr(self.comment.finish()),
        ]
    }
}

struct PartSuppCols {
    part: Int64Builder,
    supp: Int64Builder,
    availqty: Int32Builder,
    cost: Decimal128Builder,
    comment: StringBuilder,
}

impl PartSuppCols {
    fn new(n: usize) -> Self {
        Self {
            part: Int64Builder::with_capacity(n),
            supp: Int64Builder::with_capacity(n),
            availqty: Int32Builder::with_capacity(n),
            cost: dec_builder(n),
            comment: str_builder(n, 125),
        }
    }
}

impl Columns<tpchgen::generators::PartSupp<'_>> for PartSuppCols {
    fn push(&mut self, r: tpchgen::generators::PartSupp<'_>) {
        self.part.append_value(r.ps_partkey);
        self.supp.append_value(r.ps_suppkey);
        self.availqty.append_value(r.ps_availqty);
        self.cost.append_value(dec(r.ps_supplycost));
        self.comment.append_value(r.ps_comment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            arr(self.part.finish()),
            arr(self.supp.finish()),
            arr(self.availqty.finish()),
            arr(self.cost.finish()),
            arr(self.comment.finish()),
        ]
    }
}

struct CustomerCols {
    key: Int64Builder,
    name: StringBuilder,
    address: StringBuilder,
    nation: Int64Builder,
    phone: StringBuilder,
    acctbal: Decimal128Builder,
    segment: StringBuilder,
    comment: StringBuilder,
}

impl CustomerCols {
    fn new(n: usize) -> Self {
        Self {
            key: Int64Builder::with_capacity(n),
            name: str_builder(n, 18),
            address: str_builder(n, 25),
            nation: Int64Builder::with_capacity(n),
            phone: str_builder(n, 15),
            acctbal: dec_builder(n),
            segment: str_builder(n, 10),
            comment: str_builder(n, 73),
        }
    }
}

impl Columns<tpchgen::generators::Customer<'_>> for CustomerCols {
    fn push(&mut self, r: tpchgen::generators::Customer<'_>) {
        self.key.append_value(r.c_custkey);
        push_display(&mut self.name, r.c_name);
        push_display(&mut self.address, &r.c_address);
        self.nation.append_value(r.c_nationkey);
        push_display(&mut self.phone, &r.c_phone);
        self.acctbal.append_value(dec(r.c_acctbal));
        self.segment.append_value(r.c_mktsegment);
        self.comment.append_value(r.c_comment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            arr(self.key.finish()),
            arr(self.name.finish()),
            arr(self.address.finish()),
            arr(self.nation.finish()),
            arr(self.phone.finish()),
            arr(self.acctbal.finish()),
            arr(self.segment.finish()),
            arr(self.comment.finish()),
        ]
    }
}

struct OrderCols {
    key: Int64Builder,
    cust: Int64Builder,
    status: StringBuilder,
    price: Decimal128Builder,
    date: Date32Builder,
    priority: StringBuilder,
    clerk: StringBuilder,
    shippriority: Int32Builder,
    comment: StringBuilder,
}

impl OrderCols {
    fn new(n: usize) -> Self {
        Self {
            key: Int64Builder::with_capacity(n),
            cust: Int64Builder::with_capacity(n),
            status: str_builder(n, 1),
            price: dec_builder(n),
            date: Date32Builder::with_capacity(n),
            priority: str_builder(n, 9),
            clerk: str_builder(n, 15),
            shippriority: Int32Builder::with_capacity(n),
            comment: str_builder(n, 49),
        }
    }
}

impl Columns<tpchgen::generators::Order<'_>> for OrderCols {
    fn push(&mut self, r: tpchgen::generators::Order<'_>) {
        self.key.append_value(r.o_orderkey);
        self.cust.append_value(r.o_custkey);
        self.status.append_value(r.o_orderstatus.as_str());
        self.price.append_value(dec(r.o_totalprice));
        self.date.append_value(date(r.o_orderdate));
        self.priority.append_value(r.o_orderpriority);
        push_display(&mut self.clerk, r.o_clerk);
        self.shippriority.append_value(r.o_shippriority);
        self.comment.append_value(r.o_comment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            arr(self.key.finish()),
            arr(self.cust.finish()),
            arr(self.status.finish()),
            arr(self.price.finish()),
            arr(self.date.finish()),
            arr(self.priority.finish()),
            arr(self.clerk.finish()),
            arr(self.shippriority.finish()),
            arr(self.comment.finish()),
        ]
    }
}

struct LineItemCols {
    order: Int64Builder,
    part: Int64Builder,
    supp: Int64Builder,
    linenumber: Int32Builder,
    quantity: Decimal128Builder,
    extendedprice: Decimal128Builder,
    discount: Decimal128Builder,
    tax: Decimal128Builder,
    returnflag: StringBuilder,
    linestatus: StringBuilder,
    shipdate: Date32Builder,
    commitdate: Date32Builder,
    receiptdate: Date32Builder,
    shipinstruct: StringBuilder,
    shipmode: StringBuilder,
    comment: StringBuilder,
}

impl LineItemCols {
    fn new(n: usize) -> Self {
        Self {
            order: Int64Builder::with_capacity(n),
            part: Int64Builder::with_capacity(n),
            supp: Int64Builder::with_capacity(n),
            linenumber: Int32Builder::with_capacity(n),
            quantity: dec_builder(n),
            extendedprice: dec_builder(n),
            discount: dec_builder(n),
            tax: dec_builder(n),
            returnflag: str_builder(n, 1),
            linestatus: str_builder(n, 1),
            shipdate: Date32Builder::with_capacity(n),
            commitdate: Date32Builder::with_capacity(n),
            receiptdate: Date32Builder::with_capacity(n),
            shipinstruct: str_builder(n, 12),
            shipmode: str_builder(n, 5),
            comment: str_builder(n, 27),
        }
    }
}

impl Columns<tpchgen::generators::LineItem<'_>> for LineItemCols {
    fn push(&mut self, r: tpchgen::generators::LineItem<'_>) {
        self.order.append_value(r.l_orderkey);
        self.part.append_value(r.l_partkey);
        self.supp.append_value(r.l_suppkey);
        self.linenumber.append_value(r.l_linenumber);
        // dbgen's quantity is a whole number; as DECIMAL(15,2) it is scaled by 100.
        self.quantity.append_value(i128::from(r.l_quantity) * 100);
        self.extendedprice.append_value(dec(r.l_extendedprice));
        self.discount.append_value(dec(r.l_discount));
        self.tax.append_value(dec(r.l_tax));
        self.returnflag.append_value(r.l_returnflag);
        self.linestatus.append_value(r.l_linestatus);
        self.shipdate.append_value(date(r.l_shipdate));
        self.commitdate.append_value(date(r.l_commitdate));
        self.receiptdate.append_value(date(r.l_receiptdate));
        self.shipinstruct.append_value(r.l_shipinstruct);
        self.shipmode.append_value(r.l_shipmode);
        self.comment.append_value(r.l_comment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            arr(self.order.finish()),
            arr(self.part.finish()),
            arr(self.supp.finish()),
            arr(self.linenumber.finish()),
            arr(self.quantity.finish()),
            arr(self.extendedprice.finish()),
            arr(self.discount.finish()),
            arr(self.tax.finish()),
            arr(self.returnflag.finish()),
            arr(self.linestatus.finish()),
            arr(self.shipdate.finish()),
            arr(self.commitdate.finish()),
            arr(self.receiptdate.finish()),
            arr(self.shipinstruct.finish()),
            arr(self.shipmode.finish()),
            arr(self.comment.finish()),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------

const QUERIES: [&str; 22] = [
    include_str!("queries/q01.sql"),
    include_str!("queries/q02.sql"),
    include_str!("queries/q03.sql"),
    include_str!("queries/q04.sql"),
    include_str!("queries/q05.sql"),
    include_str!("queries/q06.sql"),
    include_str!("queries/q07.sql"),
    include_str!("queries/q08.sql"),
    include_str!("queries/q09.sql"),
    include_str!("queries/q10.sql"),
    include_str!("queries/q11.sql"),
    include_str!("queries/q12.sql"),
    include_str!("queries/q13.sql"),
    include_str!("queries/q14.sql"),
    include_str!("queries/q15.sql"),
    include_str!("queries/q16.sql"),
    include_str!("queries/q17.sql"),
    include_str!("queries/q18.sql"),
    include_str!("queries/q19.sql"),
    include_str!("queries/q20.sql"),
    include_str!("queries/q21.sql"),
    include_str!("queries/q22.sql"),
];

/// TPC-H query `n` (1..=22) with the validation substitution parameters, as one
/// statement without a trailing semicolon. `None` outside 1..=22.
pub fn query(n: usize) -> Option<&'static str> {
    let q = *QUERIES.get(n.checked_sub(1)?)?;
    Some(q.trim().trim_end_matches(';').trim_end())
}

/// Whether query `n`'s ORDER BY fixes a total order of its result rows, so that two
/// correct answers must list the rows in the same order.
///
/// `false` for Q3, Q5, Q10, Q11 and Q18, whose sort keys (revenue, value, total price)
/// are not unique: rows tied on them may come in any order (compare those results as
/// sets). Q3, Q10 and Q18 also have a LIMIT over that order; at the validation parameters
/// there are no ties at the cut-off, so the row *sets* still agree. Single-row queries
/// (Q6, Q14, Q17, Q19) count as totally ordered.
pub fn query_orders_fully(n: usize) -> bool {
    matches!(
        n,
        1 | 2 | 4 | 6 | 7 | 8 | 9 | 12 | 13 | 14 | 15 | 16 | 17 | 19 | 20 | 21 | 22
    )
}

/// The LIMIT of query `n`, if it has one (Q2 100, Q3 10, Q10 20, Q18 100, Q21 100).
pub fn query_limit(n: usize) -> Option<usize> {
    match n {
        2 | 18 | 21 => Some(100),
        3 => Some(10),
        10 => Some(20),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type};

    fn count(table: &str, sf: f64) -> usize {
        generate(table, sf, 10_000)
            .unwrap()
            .map(|b| b.num_rows())
            .sum()
    }

    #[test]
    fn tpch_row_counts_sf001() {
        let expected = [
            ("nation", 25),
            ("region", 5),
            ("part", 2000),
            ("supplier", 100),
            ("partsupp", 8000),
            ("customer", 1500),
            ("orders", 15000),
            ("lineitem", 60175),
        ];
        for (table, rows) in expected {
            assert_eq!(count(table, 0.01), rows, "{table}");
        }
    }

    #[test]
    fn tpch_parts_union_to_whole_table() {
        for table in TABLES {
            let whole: Vec<RecordBatch> = generate(table, 0.01, 4096).unwrap().collect();
            let whole = arrow::compute::concat_batches(&schema(table).unwrap(), &whole).unwrap();
            let mut pieces = Vec::new();
            for p in 1..=3 {
                pieces.extend(generate_part(table, 0.01, p, 3, 1000).unwrap());
            }
            let pieces = arrow::compute::concat_batches(&schema(table).unwrap(), &pieces).unwrap();
            assert_eq!(whole, pieces, "{table}");
        }
    }

    #[test]
    fn tpch_batches_match_schema_and_size() {
        for table in TABLES {
            let s = schema(table).unwrap();
            for b in generate(table, 0.01, 777).unwrap() {
                assert_eq!(b.schema(), s, "{table}");
                assert!(b.num_rows() <= 777 && b.num_rows() > 0);
                for c in b.columns() {
                    assert_eq!(c.null_count(), 0);
                }
            }
        }
    }

    #[test]
    fn tpch_first_lineitem_values() {
        // 1|155190|7706|1|17|21168.23|0.04|0.02|N|O|1996-03-13|1996-02-12|1996-03-22|... at SF 1
        let b = generate("lineitem", 1.0, 3).unwrap().next().unwrap();
        assert_eq!(b.num_rows(), 3);
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 155190);
        assert_eq!(b.column(4).as_primitive::<Decimal128Type>().value(0), 1700);
        assert_eq!(
            b.column(5).as_primitive::<Decimal128Type>().value(0),
            2116823
        );
        assert_eq!(b.column(6).as_primitive::<Decimal128Type>().value(0), 4);
        // 1996-03-13 = 9568 days after 1970-01-01
        assert_eq!(b.column(10).as_primitive::<Date32Type>().value(0), 9568);
        assert_eq!(b.column(14).as_string::<i32>().value(0), "TRUCK");
        let p = generate("part", 1.0, 1).unwrap().next().unwrap();
        assert_eq!(
            p.column(1).as_string::<i32>().value(0),
            "goldenrod lavender spring chocolate lace"
        );
        assert_eq!(p.column(2).as_string::<i32>().value(0), "Manufacturer#1");
        assert_eq!(p.column(3).as_string::<i32>().value(0), "Brand#13");
        let s = generate("supplier", 1.0, 1).unwrap().next().unwrap();
        assert_eq!(
            s.column(1).as_string::<i32>().value(0),
            "Supplier#000000001"
        );
        assert_eq!(s.column(4).as_string::<i32>().value(0), "27-918-335-1736");
    }

    #[test]
    fn tpch_bad_arguments() {
        assert!(generate("nope", 1.0, 10).is_err());
        assert!(generate("lineitem", 0.0, 10).is_err());
        assert!(generate("lineitem", f64::NAN, 10).is_err());
        assert!(generate("lineitem", 0.01, 0).is_err());
        assert!(generate_part("lineitem", 0.01, 0, 2, 10).is_err());
        assert!(generate_part("lineitem", 0.01, 3, 2, 10).is_err());
        assert!(schema("nope").is_none());
        assert_eq!(create_table_sql("nope", 4, Layout::Distributed), "");
    }

    #[test]
    fn tpch_ddl() {
        assert_eq!(
            create_table_sql("region", 4, Layout::Distributed),
            "CREATE TABLE region (r_regionkey BIGINT NOT NULL, r_name VARCHAR NOT NULL, \
             r_comment VARCHAR NOT NULL) WITH (distribution = 'reference')"
        );
        let l = create_table_sql("lineitem", 8, Layout::Distributed);
        assert!(l.starts_with("CREATE TABLE lineitem (l_orderkey BIGINT NOT NULL, "));
        assert!(l.contains("l_linenumber INTEGER NOT NULL"));
        assert!(l.contains("l_quantity DECIMAL(15,2) NOT NULL"));
        assert!(l.contains("l_shipdate DATE NOT NULL"));
        assert!(l.ends_with("WITH (distribution = 'hash(l_orderkey)', shards = 8)"));
        assert!(
            create_table_sql("orders", 8, Layout::Star)
                .ends_with("'hash(o_orderkey)', shards = 8)")
        );
        assert!(
            create_table_sql("partsupp", 3, Layout::Distributed)
                .ends_with("'hash(ps_partkey)', shards = 3)")
        );
        assert!(
            create_table_sql("part", 3, Layout::Distributed)
                .ends_with("'hash(p_partkey)', shards = 3)")
        );
        assert!(
            create_table_sql("customer", 3, Layout::Distributed)
                .ends_with("'hash(c_custkey)', shards = 3)")
        );
        for t in ["supplier", "nation", "region"] {
            assert!(
                create_table_sql(t, 3, Layout::Distributed)
                    .ends_with("(distribution = 'reference')")
            );
        }
        assert_eq!(
            create_table_sql_plain("nation"),
            "CREATE TABLE nation (n_nationkey BIGINT NOT NULL, n_name VARCHAR NOT NULL, \
             n_regionkey BIGINT NOT NULL, n_comment VARCHAR NOT NULL)"
        );
    }

    #[test]
    fn tpch_queries_present() {
        assert!(query(0).is_none());
        assert!(query(23).is_none());
        for n in 1..=22 {
            let q = query(n).unwrap();
            assert!(q.starts_with("select") || q.starts_with("with"), "Q{n}");
            assert!(!q.ends_with(';'), "Q{n}");
        }
        assert!(query_orders_fully(1));
        assert!(!query_orders_fully(3));
    }

    /// Throughput check: `cargo test --release -p flight-coordinator tpch_lineitem_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn tpch_lineitem_speed() {
        let start = std::time::Instant::now();
        let rows: usize = generate("lineitem", 1.0, 65536)
            .unwrap()
            .map(|b| b.num_rows())
            .sum();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "lineitem SF1: {rows} rows in {secs:.2}s = {:.0} rows/s",
            rows as f64 / secs
        );
    }
}
