//! sqllogictest support: the text form of result values (one formatter for
//! the cluster and for the DuckDB reference, so expectations written from
//! DuckDB compare with the cluster's answers), and the single-node DuckDB
//! database used by `--complete` mode.
//!
//! Value text:
//! * `NULL` for null, `(empty)` for the empty string, `true`/`false`;
//! * integers as they are; decimals exactly, with trailing zeros after the
//!   point removed (`2.50` → `2.5`, `3.00` → `3`), so the scale a result
//!   type happens to carry does not matter;
//! * floats rounded to 10 significant digits (partial sums on the shards
//!   add in another order than one DuckDB does), `NaN`, `inf`, `-inf`;
//! * everything else in Arrow's display form (dates `2024-01-31`).

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use arrow::util::display::array_value_to_string;
use sqllogictest::{DBOutput, DefaultColumnType};

/// An error from a database under test (its message is what `statement
/// error <regex>` records match).
#[derive(Debug)]
pub struct SltError(pub String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

/// Significant digits kept when printing floats.
pub const FLOAT_DIGITS: usize = 10;

/// The text of a float, rounded to [`FLOAT_DIGITS`] significant digits.
pub fn float_text(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let rounded: f64 = format!("{:.*e}", FLOAT_DIGITS - 1, x).parse().unwrap_or(x);
    if rounded == 0.0 {
        // No "-0".
        return "0".into();
    }
    format!("{rounded}")
}

/// The exact text of a decimal without trailing fractional zeros.
pub fn decimal_text(unscaled: i128, scale: i8) -> String {
    if scale <= 0 {
        let zeros = "0".repeat(scale.unsigned_abs() as usize);
        return if unscaled == 0 {
            "0".into()
        } else {
            format!("{unscaled}{zeros}")
        };
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let frac = frac.trim_end_matches('0');
    let sign = if unscaled < 0 { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        t if t.is_integer() => DefaultColumnType::Integer,
        DataType::Decimal32(_, 0)
        | DataType::Decimal64(_, 0)
        | DataType::Decimal128(_, 0)
        | DataType::Decimal256(_, 0) => DefaultColumnType::Integer,
        t if t.is_floating() || t.is_numeric() => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

/// The text of one value.
pub fn value_text(a: &ArrayRef, row: usize) -> String {
    if a.is_null(row) {
        return "NULL".into();
    }
    match a.data_type() {
        DataType::Float64 => float_text(a.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => float_text(f64::from(a.as_primitive::<Float32Type>().value(row))),
        DataType::Decimal128(_, s) => decimal_text(
            a.as_primitive::<arrow::datatypes::Decimal128Type>()
                .value(row),
            *s,
        ),
        DataType::Decimal64(_, s) => decimal_text(
            i128::from(
                a.as_primitive::<arrow::datatypes::Decimal64Type>()
                    .value(row),
            ),
            *s,
        ),
        DataType::Decimal32(_, s) => decimal_text(
            i128::from(
                a.as_primitive::<arrow::datatypes::Decimal32Type>()
                    .value(row),
            ),
            *s,
        ),
        DataType::Boolean => a.as_boolean().value(row).to_string(),
        _ => match array_value_to_string(a, row) {
            Ok(s) if s.is_empty() => "(empty)".into(),
            Ok(s) => s,
            Err(e) => format!("<{e}>"),
        },
    }
}

/// Query output in sqllogictest form.
pub fn rows_output(
    schema: &arrow::datatypes::Schema,
    batches: &[RecordBatch],
) -> DBOutput<DefaultColumnType> {
    let types = schema
        .fields()
        .iter()
        .map(|f| column_type(f.data_type()))
        .collect();
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| value_text(c, r)).collect());
        }
    }
    DBOutput::Rows { types, rows }
}

/// Removes the cluster's `WITH (...)` table options from a `CREATE TABLE`
/// so that DuckDB accepts it (a top-level `WITH` followed by `(`).
pub fn strip_table_options(sql: &str) -> String {
    let trimmed = sql.trim_start();
    if !trimmed.to_ascii_uppercase().starts_with("CREATE") {
        return sql.to_string();
    }
    let bytes = sql.as_bytes();
    let upper = sql.to_ascii_uppercase();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == b'\'' {
                in_str = false;
            }
        } else if c == b'\'' {
            in_str = true;
        } else if c == b'(' {
            depth += 1;
        } else if c == b')' {
            depth -= 1;
        } else if depth == 0
            && upper[i..].starts_with("WITH")
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
        {
            let rest = upper[i + 4..].trim_start();
            if rest.starts_with('(') {
                // Skip to the matching parenthesis.
                let open = i + 4 + (upper[i + 4..].len() - rest.len());
                let mut d = 0i32;
                let mut j = open;
                let mut s = false;
                while j < bytes.len() {
                    let cj = bytes[j];
                    if s {
                        if cj == b'\'' {
                            s = false;
                        }
                    } else if cj == b'\'' {
                        s = true;
                    } else if cj == b'(' {
                        d += 1;
                    } else if cj == b')' {
                        d -= 1;
                        if d == 0 {
                            break;
                        }
                    }
                    j += 1;
                }
                return format!("{}{}", &sql[..i], &sql[(j + 1).min(sql.len())..]);
            }
        }
        i += 1;
    }
    sql.to_string()
}

/// Single-node, in-memory DuckDB as a sqllogictest database (the reference
/// for `--complete` mode). Table options are stripped from `CREATE TABLE`.
pub struct DuckDb {
    conn: duckdb::Connection,
}

impl DuckDb {
    pub fn open() -> Result<Self, SltError> {
        Ok(Self {
            conn: crate::reference::open().map_err(SltError)?,
        })
    }

    fn run_blocking(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let sql = strip_table_options(sql);
        let kind = flight_coordinator::engine::classify(&sql).ok();
        if kind == Some(flight_coordinator::engine::StatementKind::Update) {
            let n = self
                .conn
                .execute(&sql, [])
                .map_err(|e| SltError(e.to_string()))?;
            return Ok(DBOutput::StatementComplete(n as u64));
        }
        let (schema, batches) =
            crate::reference::query_with_schema(&self.conn, &sql).map_err(SltError)?;
        Ok(rows_output(&schema, &batches))
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for DuckDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        tokio::task::block_in_place(|| self.run_blocking(sql))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "duckdb"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_decimals() {
        assert_eq!(float_text(2.5), "2.5");
        assert_eq!(float_text(3.0), "3");
        assert_eq!(float_text(0.1 + 0.2), "0.3");
        assert_eq!(float_text(-0.0), "0");
        assert_eq!(float_text(1.0 / 3.0), "0.3333333333");
        assert_eq!(decimal_text(250, 2), "2.5");
        assert_eq!(decimal_text(300, 2), "3");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(0, 2), "0");
        assert_eq!(decimal_text(7, -1), "70");
    }

    #[test]
    fn table_options_are_stripped() {
        assert_eq!(
            strip_table_options(
                "CREATE TABLE t (a INT, b VARCHAR) WITH (distribution = 'hash(a)', shards = 3)"
            ),
            "CREATE TABLE t (a INT, b VARCHAR) "
        );
        assert_eq!(
            strip_table_options("CREATE TABLE t WITH (distribution = 'reference') AS SELECT 1"),
            "CREATE TABLE t  AS SELECT 1"
        );
        assert_eq!(strip_table_options("SELECT * FROM t"), "SELECT * FROM t");
    }
}
