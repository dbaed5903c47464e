//! DuckDB column types ↔ Arrow types, for `CREATE TABLE` in DuckDB spelling.
//!
//! DataFusion's SQL planner does not know several DuckDB types (`HUGEINT`,
//! unsigned integers, `UUID`, `MAP(K, V)`, `STRUCT(a T, ...)`,
//! `TIMESTAMP_S/_MS/_NS`, ...), so `CREATE TABLE` without `AS SELECT` is
//! parsed here, with sqlparser's DuckDB dialect, and every column type is
//! mapped to the one Arrow type documented in `docs/types.md`. The worker
//! creates the shard column from that Arrow type (`flight_worker::storage`);
//! where one Arrow type stands for several DuckDB types (`HUGEINT`,
//! `UHUGEINT` and `DECIMAL(38,0)`; `UUID` and `VARCHAR`) the field carries
//! the DuckDB type name in [`DUCKDB_TYPE_KEY`] metadata.
//!
//! This module also holds what keeps results client-friendly: no view or
//! dictionary types ever reach a client ([`client_type`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, ColumnDef, ColumnOption, DataType as SqlType, ExactNumberInfo, Expr,
    ObjectName, Statement, TimezoneInfo, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::DuckDbDialect;
use datafusion::sql::sqlparser::parser::Parser;
pub use flight_worker::storage::DUCKDB_TYPE_KEY;

use crate::error::{Error, Result};

fn unsupported(ty: &impl std::fmt::Display, why: &str) -> Error {
    Error::InvalidArgument(format!("column type {ty} is not supported: {why}"))
}

/// A field whose DuckDB type the Arrow type alone does not say.
fn marked(name: &str, dt: DataType, nullable: bool, duckdb: &str) -> Field {
    Field::new(name, dt, nullable).with_metadata(
        [(DUCKDB_TYPE_KEY.to_string(), duckdb.to_string())]
            .into_iter()
            .collect(),
    )
}

/// The Arrow field of a column of DuckDB type `ty`.
pub fn arrow_field(name: &str, ty: &SqlType, nullable: bool) -> Result<Field> {
    Ok(match ty {
        SqlType::HugeInt | SqlType::Int128 => {
            marked(name, DataType::Decimal128(38, 0), nullable, "HUGEINT")
        }
        SqlType::UHugeInt | SqlType::UInt128 => {
            marked(name, DataType::Decimal128(38, 0), nullable, "UHUGEINT")
        }
        SqlType::Uuid => marked(name, DataType::Utf8, nullable, "UUID"),
        other => Field::new(name, arrow_type(other)?, nullable),
    })
}

fn custom_name(name: &ObjectName) -> String {
    name.to_string().trim_matches('"').to_ascii_uppercase()
}

fn decimal(info: &ExactNumberInfo, ty: &SqlType) -> Result<DataType> {
    let (p, s) = match info {
        // DuckDB's default.
        ExactNumberInfo::None => (18, 3),
        ExactNumberInfo::Precision(p) => (*p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (*p, *s),
    };
    if !(1..=38).contains(&p) {
        return Err(unsupported(
            ty,
            "DECIMAL precision must be between 1 and 38",
        ));
    }
    if s < 0 || s as u64 > p {
        return Err(unsupported(
            ty,
            "DECIMAL scale must be between 0 and the precision",
        ));
    }
    Ok(DataType::Decimal128(p as u8, s as i8))
}

/// The Arrow type of DuckDB type `ty` (nested members included).
pub fn arrow_type(ty: &SqlType) -> Result<DataType> {
    use SqlType as S;
    Ok(match ty {
        S::Boolean | S::Bool => DataType::Boolean,
        S::TinyInt(_) => DataType::Int8,
        S::SmallInt(_) | S::Int2(_) | S::Int16 => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) | S::Int32 | S::Signed | S::SignedInteger => {
            DataType::Int32
        }
        S::BigInt(_) | S::Int8(_) | S::Int64 => DataType::Int64,
        // Inside nested types the DuckDB-type marker is lost: plain DECIMAL.
        S::HugeInt | S::Int128 | S::UHugeInt | S::UInt128 => DataType::Decimal128(38, 0),
        S::UTinyInt | S::TinyIntUnsigned(_) | S::UInt8 => DataType::UInt8,
        S::USmallInt | S::SmallIntUnsigned(_) | S::Int2Unsigned(_) | S::UInt16 => DataType::UInt16,
        S::IntUnsigned(_)
        | S::IntegerUnsigned(_)
        | S::Int4Unsigned(_)
        | S::UInt32
        | S::Unsigned
        | S::UnsignedInteger => DataType::UInt32,
        S::UBigInt | S::BigIntUnsigned(_) | S::Int8Unsigned(_) | S::UInt64 => DataType::UInt64,
        S::Real | S::Float4 | S::Float32 => DataType::Float32,
        S::Float(info) => match info {
            ExactNumberInfo::Precision(p) if *p <= 24 => DataType::Float32,
            ExactNumberInfo::None => DataType::Float32,
            _ => DataType::Float64,
        },
        S::Double(_) | S::DoublePrecision | S::Float8 | S::Float64 => DataType::Float64,
        S::Decimal(info) | S::Numeric(info) | S::Dec(info) => decimal(info, ty)?,
        S::Varchar(_)
        | S::Char(_)
        | S::Character(_)
        | S::CharacterVarying(_)
        | S::CharVarying(_)
        | S::Nvarchar(_)
        | S::Text
        | S::String(_)
        | S::Uuid
        | S::JSON => DataType::Utf8,
        S::Blob(_) | S::Bytea | S::Binary(_) | S::Varbinary(_) | S::Bytes(_) => DataType::Binary,
        S::Date => DataType::Date32,
        S::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            DataType::Time64(TimeUnit::Microsecond)
        }
        S::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) | S::Datetime(_) => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        S::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        S::Interval { .. } => DataType::Interval(IntervalUnit::MonthDayNano),
        S::Array(elem) => match elem {
            ArrayElemTypeDef::SquareBracket(inner, None)
            | ArrayElemTypeDef::AngleBracket(inner)
            | ArrayElemTypeDef::Parenthesis(inner) => DataType::new_list(arrow_type(inner)?, true),
            ArrayElemTypeDef::SquareBracket(inner, Some(n)) => {
                let n = i32::try_from(*n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| unsupported(ty, "array size must be between 1 and 2^31"))?;
                DataType::new_fixed_size_list(arrow_type(inner)?, n, true)
            }
            ArrayElemTypeDef::None => return Err(unsupported(ty, "give the element type")),
        },
        S::Struct(members, _) => {
            if members.is_empty() {
                return Err(unsupported(ty, "a STRUCT needs at least one member"));
            }
            let mut fields = Vec::with_capacity(members.len());
            for (i, m) in members.iter().enumerate() {
                let name = m
                    .field_name
                    .as_ref()
                    .map(|n| n.value.clone())
                    .unwrap_or_else(|| format!("v{}", i + 1));
                fields.push(Field::new(name, arrow_type(&m.field_type)?, true));
            }
            DataType::Struct(Fields::from(fields))
        }
        S::Map(k, v) => map_type(arrow_type(k)?, arrow_type(v)?),
        S::Custom(name, modifiers) => custom_type(&custom_name(name), modifiers, ty)?,
        other => {
            return Err(unsupported(
                other,
                "see docs/types.md for the DuckDB types this cluster stores",
            ));
        }
    })
}

/// `MAP(K, V)`: DuckDB's (and Arrow's canonical) layout.
pub fn map_type(key: DataType, value: DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", key, false),
                Field::new("value", value, true),
            ])),
            false,
        )),
        false,
    )
}

/// Parses a type written inside `MAP(...)` modifiers.
fn parse_type(text: &str) -> Result<SqlType> {
    let dialect = DuckDbDialect {};
    Parser::new(&dialect)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_data_type())
        .map_err(|e| Error::InvalidArgument(format!("bad column type {text}: {e}")))
}

fn custom_type(name: &str, modifiers: &[String], ty: &SqlType) -> Result<DataType> {
    Ok(match (name, modifiers.len()) {
        ("TIMESTAMP_S", 0) => DataType::Timestamp(TimeUnit::Second, None),
        ("TIMESTAMP_MS", 0) => DataType::Timestamp(TimeUnit::Millisecond, None),
        ("TIMESTAMP_US", 0) => DataType::Timestamp(TimeUnit::Microsecond, None),
        ("TIMESTAMP_NS", 0) => DataType::Timestamp(TimeUnit::Nanosecond, None),
        ("TIMESTAMPTZ", 0) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ("TIMETZ", _) => return Err(unsupported(ty, "TIME WITH TIME ZONE has no Arrow type")),
        ("INT1", 0) => DataType::Int8,
        ("UINTEGER" | "UINT", 0) => DataType::UInt32,
        ("USMALLINT", 0) => DataType::UInt16,
        ("UTINYINT", 0) => DataType::UInt8,
        ("UBIGINT", 0) => DataType::UInt64,
        ("SHORT", 0) => DataType::Int16,
        ("LONG", 0) => DataType::Int64,
        ("BPCHAR", _) => DataType::Utf8,
        ("VARBINARY", _) => DataType::Binary,
        ("MAP", 2) => map_type(
            arrow_type(&parse_type(&modifiers[0])?)?,
            arrow_type(&parse_type(&modifiers[1])?)?,
        ),
        _ => {
            return Err(unsupported(
                ty,
                "see docs/types.md for the DuckDB types this cluster stores",
            ));
        }
    })
}

/// Normalizes an identifier like DataFusion: unquoted names are lowercased.
pub fn normalize_ident(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// The Arrow schema of a `CREATE TABLE` column list.
pub fn columns_schema(columns: &[ColumnDef]) -> Result<SchemaRef> {
    if columns.is_empty() {
        return Err(Error::InvalidArgument(
            "CREATE TABLE needs at least one column".into(),
        ));
    }
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let name = normalize_ident(&c.name);
        if fields.iter().any(|f: &Field| f.name() == &name) {
            return Err(Error::InvalidArgument(format!(
                "column {name} appears twice"
            )));
        }
        let mut nullable = true;
        for o in &c.options {
            match &o.option {
                ColumnOption::NotNull => nullable = false,
                ColumnOption::Null => nullable = true,
                ColumnOption::PrimaryKey(_) => nullable = false,
                // Uniqueness is not enforced across shards; accepted like
                // DataFusion does, as a declaration only.
                ColumnOption::Unique(_) => {}
                other => {
                    return Err(Error::Unsupported(format!(
                        "column option {other} (column {name}) is not supported"
                    )));
                }
            }
        }
        fields.push(arrow_field(&name, &c.data_type, nullable)?);
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Parses `CREATE TABLE name (columns) [WITH (...)]` in DuckDB spelling.
/// `None` when `sql` is anything else (including `CREATE TABLE ... AS`),
/// or does not parse as DuckDB SQL: the caller then parses it as usual.
pub fn parse_create_table(sql: &str) -> Option<Statement> {
    let head: String = sql
        .trim_start()
        .chars()
        .take(64)
        .collect::<String>()
        .to_ascii_uppercase();
    if !head.starts_with("CREATE") {
        return None;
    }
    let mut stmts = Parser::parse_sql(&DuckDbDialect {}, sql).ok()?;
    if stmts.len() != 1 {
        return None;
    }
    match stmts.pop()? {
        Statement::CreateTable(ct) if ct.query.is_none() && !ct.columns.is_empty() => {
            Some(Statement::CreateTable(ct))
        }
        _ => None,
    }
}

/// Rewrites integer literals too large for 64 bits (which DataFusion would
/// read as a lossy DOUBLE) into exact `DECIMAL(38,0)` values, the Arrow type
/// of `HUGEINT`: DuckDB reads such literals as `HUGEINT`.
pub fn exact_big_integers(stmt: &mut Statement) {
    struct Rewrite;
    impl VisitorMut for Rewrite {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> std::ops::ControlFlow<()> {
            if let Expr::Value(v) = expr
                && let Value::Number(n, _) = &v.value
                && n.len() <= 38
                && n.bytes().all(|b| b.is_ascii_digit())
                && n.parse::<u64>().is_err()
            {
                *expr = Expr::Cast {
                    kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
                    expr: Box::new(Expr::value(Value::SingleQuotedString(n.clone()))),
                    data_type: SqlType::Decimal(ExactNumberInfo::PrecisionAndScale(38, 0)),
                    array: false,
                    format: None,
                };
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewrite);
}

/// The type a client sees for `dt`: view types become their plain forms,
/// dictionaries their value type, recursively.
pub fn client_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::ListView(f) => DataType::List(Arc::new(client_field(f))),
        DataType::LargeListView(f) => DataType::LargeList(Arc::new(client_field(f))),
        DataType::Dictionary(_, v) => client_type(v),
        DataType::List(f) => DataType::List(Arc::new(client_field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(client_field(f))),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(Arc::new(client_field(f)), *n),
        DataType::Struct(fs) => {
            DataType::Struct(fs.iter().map(|f| client_field(f)).collect::<Fields>())
        }
        DataType::Map(f, sorted) => DataType::Map(Arc::new(client_field(f)), *sorted),
        other => other.clone(),
    }
}

fn client_field(f: &Field) -> Field {
    f.clone().with_data_type(client_type(f.data_type()))
}

/// A result schema as clients see it: every field nullable, no view or
/// dictionary types.
pub fn client_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| client_field(f).with_nullable(true))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn schema_of(sql: &str) -> SchemaRef {
        let Some(Statement::CreateTable(ct)) = parse_create_table(sql) else {
            panic!("not parsed: {sql}");
        };
        columns_schema(&ct.columns).unwrap()
    }

    #[test]
    fn duckdb_spelling() {
        let s = schema_of(
            "CREATE TABLE t (a TINYINT, b SMALLINT, c INTEGER NOT NULL, d BIGINT, h HUGEINT, \
             ua UTINYINT, ub USMALLINT, uc UINTEGER, ud UBIGINT, uh UHUGEINT, \
             f FLOAT, g DOUBLE, d1 DECIMAL(4,2), d2 DECIMAL(18,6), d3 DECIMAL(38,10), \
             v VARCHAR, bl BLOB, bo BOOLEAN, dt DATE, tm TIME, ts TIMESTAMP, \
             ts_s TIMESTAMP_S, ts_ms TIMESTAMP_MS, ts_ns TIMESTAMP_NS, tz TIMESTAMPTZ, \
             tz2 TIMESTAMP WITH TIME ZONE, iv INTERVAL, u UUID, li INTEGER[], lv VARCHAR[], \
             s STRUCT(a INT, b VARCHAR), m MAP(VARCHAR, INTEGER)) \
             WITH (distribution = 'hash(a)', shards = 3)",
        );
        let ty = |n: &str| s.field_with_name(n).unwrap().data_type().clone();
        assert_eq!(ty("a"), DataType::Int8);
        assert!(!s.field_with_name("c").unwrap().is_nullable());
        assert_eq!(ty("h"), DataType::Decimal128(38, 0));
        assert_eq!(
            s.field_with_name("h").unwrap().metadata()[DUCKDB_TYPE_KEY],
            "HUGEINT"
        );
        assert_eq!(ty("ud"), DataType::UInt64);
        assert_eq!(ty("d3"), DataType::Decimal128(38, 10));
        assert_eq!(ty("tm"), DataType::Time64(TimeUnit::Microsecond));
        assert_eq!(ty("ts_s"), DataType::Timestamp(TimeUnit::Second, None));
        assert_eq!(ty("ts_ns"), DataType::Timestamp(TimeUnit::Nanosecond, None));
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(ty("tz"), utc);
        assert_eq!(ty("tz2"), utc);
        assert_eq!(ty("iv"), DataType::Interval(IntervalUnit::MonthDayNano));
        assert_eq!(ty("u"), DataType::Utf8);
        assert_eq!(ty("lv"), DataType::new_list(DataType::Utf8, true));
        assert_eq!(ty("m"), map_type(DataType::Utf8, DataType::Int32));
        assert!(matches!(ty("s"), DataType::Struct(f) if f.len() == 2));
    }

    #[test]
    fn not_ours() {
        assert!(parse_create_table("CREATE TABLE t AS SELECT 1").is_none());
        assert!(parse_create_table("SELECT 1").is_none());
        let Some(Statement::CreateTable(ct)) = parse_create_table("CREATE TABLE t (a GEOMETRY)")
        else {
            panic!()
        };
        assert!(columns_schema(&ct.columns).is_err());
    }

    #[test]
    fn client_types() {
        let dt = DataType::Struct(Fields::from(vec![Field::new(
            "a",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8View)),
            true,
        )]));
        assert_eq!(
            client_type(&dt),
            DataType::Struct(Fields::from(vec![Field::new("a", DataType::Utf8, true)]))
        );
    }
}
