//! Shared test support: a single-node DuckDB reference engine and a result comparator,
//! sqllogictest value formatting ([`slt`]) and the random query generator ([`difftest`]).

pub mod difftest;
pub mod slt;

/// A single-process, in-memory DuckDB used as the reference answer for cluster queries.
///
/// Everything here is plain synchronous code; async tests call it from
/// `tokio::task::spawn_blocking`.
pub mod reference {
    use arrow::array::RecordBatch;
    use arrow::datatypes::{DataType, Schema, SchemaRef};
    pub use duckdb::Connection;

    fn err(context: &str) -> impl Fn(duckdb::Error) -> String + '_ {
        move |e| format!("{context}: {e}")
    }

    /// Quotes an identifier for DuckDB (`"name"`, inner quotes doubled).
    pub fn quote_ident(name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }

    /// Opens a fresh in-memory DuckDB database.
    pub fn open() -> Result<Connection, String> {
        Connection::open_in_memory().map_err(err("open in-memory DuckDB"))
    }

    /// The DuckDB column type for an Arrow type (the workers' own mapping).
    pub fn duckdb_type(data_type: &DataType) -> Result<String, String> {
        flight_worker::sqlgen::duckdb_type(data_type).map_err(|e| e.to_string())
    }

    /// `CREATE TABLE name (col TYPE [NOT NULL], ...)` from an Arrow schema.
    pub fn create_table_sql(name: &str, schema: &Schema) -> Result<String, String> {
        let mut cols = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let ty = duckdb_type(f.data_type()).map_err(|e| format!("{name}.{}: {e}", f.name()))?;
            let null = if f.is_nullable() { "" } else { " NOT NULL" };
            cols.push(format!("{} {ty}{null}", quote_ident(f.name())));
        }
        Ok(format!(
            "CREATE TABLE {} ({})",
            quote_ident(name),
            cols.join(", ")
        ))
    }

    /// Creates table `name` with the columns of `schema`.
    pub fn create_table(conn: &Connection, name: &str, schema: &Schema) -> Result<(), String> {
        let sql = create_table_sql(name, schema)?;
        conn.execute_batch(&sql).map_err(err(&sql))
    }

    /// Appends batches to an existing table through DuckDB's Arrow appender; returns the
    /// number of rows appended.
    pub fn append(
        conn: &Connection,
        name: &str,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Result<u64, String> {
        let context = format!("append to {name}");
        let mut app = conn.appender(name).map_err(err(&context))?;
        let mut rows = 0u64;
        for b in batches {
            rows += b.num_rows() as u64;
            app.append_record_batch(b).map_err(err(&context))?;
        }
        app.flush().map_err(err(&context))?;
        Ok(rows)
    }

    /// Creates `name` from `schema` and loads `batches` into it.
    pub fn load_table(
        conn: &Connection,
        name: &str,
        schema: &Schema,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Result<u64, String> {
        create_table(conn, name, schema)?;
        append(conn, name, batches)
    }

    /// Creates and fills the eight TPC-H tables at scale factor `sf`.
    pub fn load_tpch(conn: &Connection, sf: f64) -> Result<(), String> {
        use flight_coordinator::tpch;
        for table in tpch::TABLES {
            let schema = tpch::schema(table).ok_or_else(|| format!("no schema for {table}"))?;
            let batches = tpch::generate(table, sf, 64 * 1024)?;
            load_table(conn, table, &schema, batches)?;
        }
        Ok(())
    }

    /// Runs one statement and returns its result schema and batches.
    pub fn query_with_schema(
        conn: &Connection,
        sql: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
        let context = |e: duckdb::Error| format!("DuckDB: {e}\nquery: {sql}");
        let mut stmt = conn.prepare(sql).map_err(context)?;
        let arrow = stmt.query_arrow([]).map_err(context)?;
        let schema = arrow.get_schema();
        let batches = arrow.collect();
        Ok((schema, batches))
    }

    /// Runs one statement and returns its result batches.
    pub fn query(conn: &Connection, sql: &str) -> Result<Vec<RecordBatch>, String> {
        query_with_schema(conn, sql).map(|(_, b)| b)
    }
}

/// Value-by-value comparison of two query results.
pub mod compare {
    use std::cmp::Ordering;
    use std::collections::BTreeSet;

    use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
    use arrow::datatypes::{
        DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type,
        Int8Type, Int16Type, Int32Type, Int64Type, Time32MillisecondType, Time32SecondType,
        Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
        TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type,
        UInt16Type, UInt32Type, UInt64Type,
    };
    use arrow::util::display::array_value_to_string;
    use arrow::util::pretty::pretty_format_batches;

    /// Relative tolerance for comparisons involving a floating-point value.
    pub const REL_TOLERANCE: f64 = 1e-9;
    /// Absolute tolerance near zero for comparisons involving a floating-point value.
    pub const ABS_TOLERANCE: f64 = 1e-12;

    const NS_PER_DAY: i128 = 86_400_000_000_000;

    /// One value, normalized so that equal values of different Arrow types compare equal.
    #[derive(Clone, Debug)]
    enum Cell {
        Null,
        /// Any integer, or a decimal whose value is whole.
        Int(i128),
        /// A non-whole decimal `v / 10^s` with trailing zeros removed (so `v % 10 != 0`).
        Dec(i128, u32),
        Float(f64),
        Str(String),
        Bool(bool),
        /// Dates and timestamps as nanoseconds since the epoch (time zone ignored).
        Temporal(i128),
        /// Time of day in nanoseconds.
        Time(i128),
        Bytes(Vec<u8>),
        /// Anything else, by its display form.
        Other(String),
    }

    impl Cell {
        fn rank(&self) -> u8 {
            match self {
                Cell::Null => 0,
                Cell::Int(_) | Cell::Dec(..) | Cell::Float(_) => 1,
                Cell::Str(_) => 2,
                Cell::Bool(_) => 3,
                Cell::Temporal(_) => 4,
                Cell::Time(_) => 5,
                Cell::Bytes(_) => 6,
                Cell::Other(_) => 7,
            }
        }

        fn as_f64(&self) -> Option<f64> {
            match self {
                Cell::Int(v) => Some(*v as f64),
                // Parsing gives the correctly rounded f64 of the exact decimal.
                Cell::Dec(v, s) => format!("{v}e-{s}").parse().ok(),
                Cell::Float(f) => Some(*f),
                _ => None,
            }
        }

        /// `(unscaled, scale)` for exact numbers.
        fn as_exact(&self) -> Option<(i128, u32)> {
            match self {
                Cell::Int(v) => Some((*v, 0)),
                Cell::Dec(v, s) => Some((*v, *s)),
                _ => None,
            }
        }
    }

    fn decimal_cell(v: i128, scale: i8) -> Cell {
        if scale <= 0 {
            let factor = 10i128.checked_pow(u32::from(scale.unsigned_abs()));
            return match factor.and_then(|f| v.checked_mul(f)) {
                Some(x) => Cell::Int(x),
                None => Cell::Other(format!("{v}e{}", -i32::from(scale))),
            };
        }
        let (mut v, mut s) = (v, u32::from(scale.unsigned_abs()));
        while s > 0 && v % 10 == 0 {
            v /= 10;
            s -= 1;
        }
        if s == 0 {
            Cell::Int(v)
        } else {
            Cell::Dec(v, s)
        }
    }

    fn floats_equal(a: f64, b: f64) -> bool {
        if a.is_nan() || b.is_nan() {
            return a.is_nan() && b.is_nan();
        }
        if a == b {
            return true;
        }
        let diff = (a - b).abs();
        diff <= ABS_TOLERANCE || diff <= REL_TOLERANCE * a.abs().max(b.abs())
    }

    fn cells_equal(a: &Cell, b: &Cell) -> bool {
        match (a, b) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Int(x), Cell::Int(y)) => x == y,
            (Cell::Dec(x, s), Cell::Dec(y, t)) => x == y && s == t,
            (Cell::Int(_), Cell::Dec(..)) | (Cell::Dec(..), Cell::Int(_)) => false,
            (Cell::Float(_), _) | (_, Cell::Float(_)) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => floats_equal(x, y),
                _ => false,
            },
            (Cell::Str(x), Cell::Str(y)) => x == y,
            (Cell::Bool(x), Cell::Bool(y)) => x == y,
            (Cell::Temporal(x), Cell::Temporal(y)) => x == y,
            (Cell::Time(x), Cell::Time(y)) => x == y,
            (Cell::Bytes(x), Cell::Bytes(y)) => x == y,
            (Cell::Other(x), Cell::Other(y)) => x == y,
            _ => false,
        }
    }

    fn cmp_exact((a, s): (i128, u32), (b, t): (i128, u32)) -> Option<Ordering> {
        let m = s.max(t);
        let a = a.checked_mul(10i128.checked_pow(m - s)?)?;
        let b = b.checked_mul(10i128.checked_pow(m - t)?)?;
        Some(a.cmp(&b))
    }

    /// A total order over cells, consistent across types for numbers.
    fn cmp_cells(a: &Cell, b: &Cell) -> Ordering {
        let by_rank = a.rank().cmp(&b.rank());
        if by_rank != Ordering::Equal {
            return by_rank;
        }
        match (a, b) {
            (Cell::Str(x), Cell::Str(y)) | (Cell::Other(x), Cell::Other(y)) => x.cmp(y),
            (Cell::Bool(x), Cell::Bool(y)) => x.cmp(y),
            (Cell::Temporal(x), Cell::Temporal(y)) | (Cell::Time(x), Cell::Time(y)) => x.cmp(y),
            (Cell::Bytes(x), Cell::Bytes(y)) => x.cmp(y),
            _ => {
                if let (Some(x), Some(y)) = (a.as_exact(), b.as_exact())
                    && let Some(o) = cmp_exact(x, y)
                {
                    return o;
                }
                let x = a.as_f64().unwrap_or(f64::NAN);
                let y = b.as_f64().unwrap_or(f64::NAN);
                x.total_cmp(&y)
            }
        }
    }

    fn primitive<T, F>(a: &dyn Array, f: F) -> Vec<Cell>
    where
        T: arrow::datatypes::ArrowPrimitiveType,
        F: Fn(T::Native) -> Cell,
    {
        let p = a.as_primitive::<T>();
        (0..p.len())
            .map(|i| {
                if p.is_null(i) {
                    Cell::Null
                } else {
                    f(p.value(i))
                }
            })
            .collect()
    }

    fn column_cells(a: &ArrayRef) -> Result<Vec<Cell>, String> {
        use DataType as D;
        let n = a.len();
        let null_or = |i: usize, f: &dyn Fn(usize) -> Cell| {
            if a.is_null(i) { Cell::Null } else { f(i) }
        };
        Ok(match a.data_type() {
            D::Null => vec![Cell::Null; n],
            D::Int8 => primitive::<Int8Type, _>(a, |v| Cell::Int(v.into())),
            D::Int16 => primitive::<Int16Type, _>(a, |v| Cell::Int(v.into())),
            D::Int32 => primitive::<Int32Type, _>(a, |v| Cell::Int(v.into())),
            D::Int64 => primitive::<Int64Type, _>(a, |v| Cell::Int(v.into())),
            D::UInt8 => primitive::<UInt8Type, _>(a, |v| Cell::Int(v.into())),
            D::UInt16 => primitive::<UInt16Type, _>(a, |v| Cell::Int(v.into())),
            D::UInt32 => primitive::<UInt32Type, _>(a, |v| Cell::Int(v.into())),
            D::UInt64 => primitive::<UInt64Type, _>(a, |v| Cell::Int(v.into())),
            D::Float32 => primitive::<Float32Type, _>(a, |v| Cell::Float(v.into())),
            D::Float64 => primitive::<Float64Type, _>(a, Cell::Float),
            D::Decimal128(_, s) => {
                let s = *s;
                primitive::<Decimal128Type, _>(a, |v| decimal_cell(v, s))
            }
            D::Decimal256(_, s) => {
                let s = *s;
                primitive::<Decimal256Type, _>(a, |v| match v.to_i128() {
                    Some(v) => decimal_cell(v, s),
                    None => Cell::Other(format!("{v}e-{s}")),
                })
            }
            D::Date32 => {
                primitive::<Date32Type, _>(a, |v| Cell::Temporal(i128::from(v) * NS_PER_DAY))
            }
            D::Date64 => {
                primitive::<Date64Type, _>(a, |v| Cell::Temporal(i128::from(v) * 1_000_000))
            }
            D::Timestamp(unit, _) => match unit {
                TimeUnit::Second => primitive::<TimestampSecondType, _>(a, |v| {
                    Cell::Temporal(i128::from(v) * 1_000_000_000)
                }),
                TimeUnit::Millisecond => primitive::<TimestampMillisecondType, _>(a, |v| {
                    Cell::Temporal(i128::from(v) * 1_000_000)
                }),
                TimeUnit::Microsecond => primitive::<TimestampMicrosecondType, _>(a, |v| {
                    Cell::Temporal(i128::from(v) * 1_000)
                }),
                TimeUnit::Nanosecond => {
                    primitive::<TimestampNanosecondType, _>(a, |v| Cell::Temporal(i128::from(v)))
                }
            },
            D::Time32(TimeUnit::Second) => {
                primitive::<Time32SecondType, _>(a, |v| Cell::Time(i128::from(v) * 1_000_000_000))
            }
            D::Time32(_) => {
                primitive::<Time32MillisecondType, _>(a, |v| Cell::Time(i128::from(v) * 1_000_000))
            }
            D::Time64(TimeUnit::Microsecond) => {
                primitive::<Time64MicrosecondType, _>(a, |v| Cell::Time(i128::from(v) * 1_000))
            }
            D::Time64(_) => primitive::<Time64NanosecondType, _>(a, |v| Cell::Time(i128::from(v))),
            D::Boolean => {
                let b = a.as_boolean();
                (0..n)
                    .map(|i| null_or(i, &|i| Cell::Bool(b.value(i))))
                    .collect()
            }
            D::Utf8 => {
                let s = a.as_string::<i32>();
                (0..n)
                    .map(|i| null_or(i, &|i| Cell::Str(s.value(i).to_string())))
                    .collect()
            }
            D::LargeUtf8 => {
                let s = a.as_string::<i64>();
                (0..n)
                    .map(|i| null_or(i, &|i| Cell::Str(s.value(i).to_string())))
                    .collect()
            }
            D::Utf8View => {
                let s = a.as_string_view();
                (0..n)
                    .map(|i| null_or(i, &|i| Cell::Str(s.value(i).to_string())))
                    .collect()
            }
            D::Binary => {
                let s = a.as_binary::<i32>();
                (0..n)
                    .map(|i| null_or(i, &|i| Cell::Bytes(s.value(i).to_vec())))
                    .collect()
            }
            D::LargeBinary => {
                let s = a.as_binary::<i64>();
                (0..n)
                    .map(|i| null_or(i, &|i| Cell::Bytes(s.value(i).to_vec())))
                    .collect()
            }
            D::BinaryView => {
                let s = a.as_binary_view();
                (0..n)
                    .map(|i| null_or(i, &|i| Cell::Bytes(s.value(i).to_vec())))
                    .collect()
            }
            D::Float16 | D::Decimal32(..) | D::Decimal64(..) | D::Dictionary(..) => {
                let target = match a.data_type() {
                    D::Float16 => D::Float64,
                    D::Decimal32(p, s) | D::Decimal64(p, s) => D::Decimal128(*p, *s),
                    D::Dictionary(_, v) => v.as_ref().clone(),
                    other => other.clone(),
                };
                let cast = arrow::compute::cast(a, &target)
                    .map_err(|e| format!("cannot read {} as {target}: {e}", a.data_type()))?;
                column_cells(&cast)?
            }
            _ => (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Ok(Cell::Null)
                    } else {
                        array_value_to_string(a, i).map(Cell::Other)
                    }
                })
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cannot display {}: {e}", a.data_type()))?,
        })
    }

    /// One side of a comparison: its rows as normalized cells and where each row came from.
    struct Side<'a> {
        batches: &'a [RecordBatch],
        /// `(batch index, row index)` of each row, in comparison order.
        origin: Vec<(usize, usize)>,
        rows: Vec<Vec<Cell>>,
        names: Vec<String>,
        types: Vec<DataType>,
    }

    impl<'a> Side<'a> {
        fn new(batches: &'a [RecordBatch]) -> Result<Self, String> {
            let mut origin = Vec::new();
            let mut rows = Vec::new();
            let (names, types) = match batches.first() {
                Some(b) => (
                    b.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect(),
                    b.schema()
                        .fields()
                        .iter()
                        .map(|f| f.data_type().clone())
                        .collect(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            for (bi, b) in batches.iter().enumerate() {
                let cols = b
                    .columns()
                    .iter()
                    .map(column_cells)
                    .collect::<Result<Vec<_>, _>>()?;
                for r in 0..b.num_rows() {
                    origin.push((bi, r));
                    rows.push(cols.iter().map(|c| c[r].clone()).collect());
                }
            }
            Ok(Side {
                batches,
                origin,
                rows,
                names,
                types,
            })
        }

        fn sort(&mut self, key_order: &[usize]) {
            let mut idx: Vec<usize> = (0..self.rows.len()).collect();
            idx.sort_by(|&i, &j| {
                for &c in key_order {
                    let o = match (self.rows[i].get(c), self.rows[j].get(c)) {
                        (Some(a), Some(b)) => cmp_cells(a, b),
                        (a, b) => a.is_some().cmp(&b.is_some()),
                    };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            });
            self.origin = idx.iter().map(|&i| self.origin[i]).collect();
            let mut rows = std::mem::take(&mut self.rows);
            self.rows = idx.iter().map(|&i| std::mem::take(&mut rows[i])).collect();
        }

        fn value(&self, row: usize, col: usize) -> String {
            let (b, r) = self.origin[row];
            match self.batches[b].columns().get(col) {
                Some(a) => array_value_to_string(a, r).unwrap_or_else(|e| format!("<{e}>")),
                None => "<missing>".to_string(),
            }
        }

        fn pretty_row(&self, row: usize) -> String {
            let (b, r) = self.origin[row];
            let slice = self.batches[b].slice(r, 1);
            match pretty_format_batches(&[slice]) {
                Ok(t) => t.to_string(),
                Err(e) => format!("<cannot print row: {e}>"),
            }
        }

        fn name(&self, col: usize) -> &str {
            self.names.get(col).map(String::as_str).unwrap_or("?")
        }

        fn type_name(&self, col: usize) -> String {
            self.types
                .get(col)
                .map(|t| t.to_string())
                .unwrap_or_else(|| "?".to_string())
        }
    }

    fn is_float(t: &DataType) -> bool {
        matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
    }

    /// Compares two query results value by value.
    ///
    /// * Row and column counts must match; column names are not compared.
    /// * Integers of any width and whole decimals compare as integers; decimals compare
    ///   exactly by value whatever their precision and scale; when either side is a float,
    ///   numbers compare with a relative tolerance of [`REL_TOLERANCE`] (or
    ///   [`ABS_TOLERANCE`] near zero); strings, booleans, dates and timestamps (as instants;
    ///   a date equals the timestamp at its midnight) compare exactly; null equals only null.
    /// * With `ordered == false` both sides are first sorted by a canonical key (exact
    ///   columns first, float columns last).
    ///
    /// The error names the first differing row and every differing column in it, with both
    /// rows pretty-printed, and lists the columns that differ anywhere.
    pub fn compare_results(
        expected: &[RecordBatch],
        actual: &[RecordBatch],
        ordered: bool,
    ) -> Result<(), String> {
        let mut exp = Side::new(expected)?;
        let mut act = Side::new(actual)?;
        let (ne, na) = (exp.rows.len(), act.rows.len());
        let width = exp.types.len();
        if !expected.is_empty() && !actual.is_empty() && width != act.types.len() {
            return Err(format!(
                "column count differs: expected {width} columns ({}), actual {} ({})",
                exp.names.join(", "),
                act.types.len(),
                act.names.join(", ")
            ));
        }
        if !ordered {
            let float_col = |c: usize| {
                exp.types.get(c).is_some_and(is_float) || act.types.get(c).is_some_and(is_float)
            };
            let n = width.max(act.types.len());
            let mut key: Vec<usize> = (0..n).filter(|&c| !float_col(c)).collect();
            key.extend((0..n).filter(|&c| float_col(c)));
            exp.sort(&key);
            act.sort(&key);
        }

        let mut first: Option<(usize, Vec<usize>)> = None;
        let mut diff_rows = 0usize;
        let mut diff_cols = BTreeSet::new();
        for r in 0..ne.min(na) {
            let cols: Vec<usize> = (0..exp.rows[r].len().max(act.rows[r].len()))
                .filter(|&c| match (exp.rows[r].get(c), act.rows[r].get(c)) {
                    (Some(a), Some(b)) => !cells_equal(a, b),
                    _ => true,
                })
                .collect();
            if !cols.is_empty() {
                diff_rows += 1;
                diff_cols.extend(cols.iter().copied());
                if first.is_none() {
                    first = Some((r, cols));
                }
            }
        }
        if first.is_none() && ne == na {
            return Ok(());
        }

        let mut msg = String::new();
        let order = if ordered { "in order" } else { "sorted" };
        if ne != na {
            msg.push_str(&format!("row count differs: expected {ne}, actual {na}\n"));
        }
        if let Some((r, cols)) = first {
            msg.push_str(&format!(
                "{diff_rows} of {} compared rows differ ({order}); columns differing anywhere: {}\n",
                ne.min(na),
                diff_cols
                    .iter()
                    .map(|&c| format!("{c}:{}", exp.name(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            msg.push_str(&format!("first difference at row {r}:\n"));
            for c in cols {
                let rel = match (
                    exp.rows[r].get(c).and_then(Cell::as_f64),
                    act.rows[r].get(c).and_then(Cell::as_f64),
                ) {
                    (Some(x), Some(y)) if x != y => {
                        format!(
                            " (relative difference {:.3e})",
                            (x - y).abs() / x.abs().max(y.abs())
                        )
                    }
                    _ => String::new(),
                };
                msg.push_str(&format!(
                    "  column {c} `{}` (expected {} / actual `{}` {}): expected {} vs actual {}{rel}\n",
                    exp.name(c),
                    exp.type_name(c),
                    act.name(c),
                    act.type_name(c),
                    exp.value(r, c),
                    act.value(r, c),
                ));
            }
            msg.push_str(&format!(
                "expected row {r}:\n{}\nactual row {r}:\n{}\n",
                exp.pretty_row(r),
                act.pretty_row(r)
            ));
        } else {
            let extra = ne.min(na);
            let (side, label) = if ne > na {
                (&exp, "expected")
            } else {
                (&act, "actual")
            };
            msg.push_str(&format!(
                "the first {extra} rows agree ({order}); first extra {label} row {extra}:\n{}\n",
                side.pretty_row(extra)
            ));
        }
        Err(msg)
    }

    #[cfg(test)]
    mod tests {
        #![allow(
            clippy::unwrap_used,
            clippy::expect_used,
            clippy::cloned_ref_to_slice_refs
        )]
        use super::*;
        use arrow::array::{
            Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
            StringViewArray, TimestampMicrosecondArray,
        };
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;

        fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
            let fields: Vec<Field> = cols
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect();
            RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                cols.into_iter().map(|(_, a)| a).collect(),
            )
            .unwrap()
        }

        fn dec(values: &[i128], p: u8, s: i8) -> ArrayRef {
            Arc::new(
                Decimal128Array::from(values.to_vec())
                    .with_precision_and_scale(p, s)
                    .unwrap(),
            )
        }

        #[test]
        fn equal_results_pass() {
            let a = batch(vec![
                ("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
                ("s", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
            ]);
            compare_results(&[a.clone()], &[a.clone()], true).unwrap();
            // split into several batches on one side
            compare_results(&[a.slice(0, 1), a.slice(1, 2)], &[a], true).unwrap();
        }

        #[test]
        fn wrong_value_fails() {
            let e = batch(vec![
                ("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
                ("v", dec(&[100, 250, 399], 15, 2)),
            ]);
            let a = batch(vec![
                ("K", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
                ("V", dec(&[100, 250, 398], 15, 2)),
            ]);
            let err = compare_results(&[e.clone()], &[a.clone()], true).unwrap_err();
            assert!(err.contains("row 2"), "{err}");
            assert!(err.contains("`v`"), "{err}");
            assert!(err.contains("3.99") && err.contains("3.98"), "{err}");
            assert!(compare_results(&[e], &[a], false).is_err());
        }

        #[test]
        fn wrong_string_and_row_count_fail() {
            let e = batch(vec![(
                "s",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            )]);
            let a = batch(vec![(
                "s",
                Arc::new(StringArray::from(vec!["a", "B"])) as ArrayRef,
            )]);
            assert!(compare_results(&[e.clone()], &[a], true).is_err());
            let short = e.slice(0, 1);
            let err = compare_results(&[e.clone()], &[short], true).unwrap_err();
            assert!(
                err.contains("row count differs: expected 2, actual 1"),
                "{err}"
            );
            assert!(compare_results(&[e], &[], true).is_err());
            compare_results(&[], &[], true).unwrap();
        }

        #[test]
        fn column_count_must_match() {
            let e = batch(vec![("a", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
            let a = batch(vec![
                ("a", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                ("b", Arc::new(Int64Array::from(vec![1]))),
            ]);
            let err = compare_results(&[e], &[a], true).unwrap_err();
            assert!(err.contains("column count"), "{err}");
        }

        #[test]
        fn integer_widths_and_whole_decimals_are_integers() {
            let e = batch(vec![(
                "n",
                Arc::new(Int32Array::from(vec![7, -3])) as ArrayRef,
            )]);
            let a = batch(vec![("n", dec(&[700, -300], 38, 2))]);
            compare_results(&[e.clone()], &[a], true).unwrap();
            let a = batch(vec![("n", dec(&[7, -3], 38, 0))]);
            compare_results(&[e.clone()], &[a], true).unwrap();
            let a = batch(vec![("n", dec(&[701, -300], 38, 2))]);
            assert!(compare_results(&[e], &[a], true).is_err());
        }

        #[test]
        fn decimals_compare_exactly_across_scales() {
            let e = batch(vec![("d", dec(&[12345], 15, 2))]);
            compare_results(
                &[e.clone()],
                &[batch(vec![("d", dec(&[123450000], 38, 6))])],
                true,
            )
            .unwrap();
            // one unit in the 6th decimal place is a difference between two decimals
            let a = batch(vec![("d", dec(&[123450001], 38, 6))]);
            assert!(compare_results(&[e], &[a], true).is_err());
        }

        #[test]
        fn decimal_vs_float_uses_tolerance() {
            let e = batch(vec![("d", dec(&[2552272], 19, 5))]); // 25.52272
            let close = batch(vec![(
                "d",
                Arc::new(Float64Array::from(vec![25.52272 * (1.0 + 1e-12)])) as ArrayRef,
            )]);
            compare_results(&[e.clone()], &[close], true).unwrap();
            let far = batch(vec![(
                "d",
                Arc::new(Float64Array::from(vec![25.52272 * (1.0 + 1e-7)])) as ArrayRef,
            )]);
            let err = compare_results(&[e], &[far], true).unwrap_err();
            assert!(err.contains("relative difference"), "{err}");
        }

        #[test]
        fn floats_relative_and_absolute() {
            let f = |v: Vec<f64>| batch(vec![("f", Arc::new(Float64Array::from(v)) as ArrayRef)]);
            compare_results(&[f(vec![1e20, 0.0])], &[f(vec![1e20 + 1e10, 1e-13])], true).unwrap();
            assert!(compare_results(&[f(vec![1.0])], &[f(vec![1.0 + 1e-8])], true).is_err());
            assert!(compare_results(&[f(vec![0.0])], &[f(vec![1e-11])], true).is_err());
            compare_results(&[f(vec![f64::NAN])], &[f(vec![f64::NAN])], true).unwrap();
        }

        #[test]
        fn nulls() {
            let e = batch(vec![(
                "x",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            )]);
            compare_results(&[e.clone()], &[e.clone()], true).unwrap();
            let a = batch(vec![(
                "x",
                Arc::new(Int64Array::from(vec![Some(1), Some(0)])) as ArrayRef,
            )]);
            assert!(compare_results(&[e], &[a], true).is_err());
        }

        #[test]
        fn string_types_and_dates() {
            let e = batch(vec![
                ("s", Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef),
                ("d", Arc::new(Date32Array::from(vec![0, 9568]))),
            ]);
            let a = batch(vec![
                (
                    "s",
                    Arc::new(StringViewArray::from(vec!["x", "y"])) as ArrayRef,
                ),
                (
                    "d",
                    Arc::new(TimestampMicrosecondArray::from(vec![
                        0,
                        9568 * 86_400_000_000,
                    ])),
                ),
            ]);
            compare_results(&[e.clone()], &[a], true).unwrap();
            let a = batch(vec![
                (
                    "s",
                    Arc::new(StringViewArray::from(vec!["x", "y"])) as ArrayRef,
                ),
                ("d", Arc::new(Date32Array::from(vec![0, 9569]))),
            ]);
            let err = compare_results(&[e], &[a], true).unwrap_err();
            assert!(
                err.contains("1996-03-13") && err.contains("1996-03-14"),
                "{err}"
            );
        }

        #[test]
        fn unordered_sorts_both_sides() {
            let e = batch(vec![
                ("k", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
                ("f", Arc::new(Float64Array::from(vec![0.5, 0.25, 0.125]))),
            ]);
            let a = batch(vec![
                ("k", dec(&[300, 100, 200], 10, 2)),
                ("f", Arc::new(Float64Array::from(vec![0.125, 0.5, 0.25]))),
            ]);
            assert!(compare_results(&[e.clone()], &[a.clone()], true).is_err());
            compare_results(&[e.clone()], &[a], false).unwrap();
            // same multiset of keys but a value moved to another row
            let a = batch(vec![
                ("k", Arc::new(Int64Array::from(vec![3, 1, 2])) as ArrayRef),
                ("f", Arc::new(Float64Array::from(vec![0.5, 0.125, 0.25]))),
            ]);
            assert!(compare_results(&[e], &[a], false).is_err());
        }
    }
}
