//! Flight SQL metadata: the `GetSqlInfo` values, `GetXdbcTypeInfo`, the
//! key commands' schemas, and the XDBC field metadata on table schemas.
//!
//! Everything here follows `FlightSql.proto`: the JDBC driver reads these
//! values by their union member, and ADBC checks each reply's schema
//! against the spec's exactly (names, types, nullability).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel,
    SqlSupportedCaseSensitivity, SqlSupportedGroupBy, SqlSupportedResultSetType,
    SqlSupportedSubqueries, SqlSupportedTransaction, SqlSupportedUnions, SqlSupportsConvert,
    SupportedSqlGrammar, XdbcDataType, XdbcDatetimeSubcode,
};
use tonic::Status;

use crate::engine::{CATALOG, SCHEMA};

/// The product name clients show.
pub const SERVER_NAME: &str = "fsql";

fn bits<T: Into<i32>>(values: impl IntoIterator<Item = T>) -> i32 {
    values.into_iter().fold(0, |acc, v| acc | (1 << v.into()))
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "cbrt", "ceil", "cos", "cot", "degrees", "exp",
    "floor", "ln", "log", "log10", "log2", "pi", "power", "radians", "random", "round", "sign",
    "sin", "sqrt", "tan", "trunc",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "octet_length",
    "position",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "translate",
    "trim",
    "upper",
];
const SYSTEM_FUNCTIONS: &[&str] = &["arrow_typeof", "coalesce", "nullif", "version"];
const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "current_timestamp",
    "date_bin",
    "date_part",
    "date_trunc",
    "extract",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
];

/// The `GetSqlInfo` values: ids 0-11, 100-101 and 500-576.
pub fn sql_info() -> Result<SqlInfoData, Status> {
    let mut b = SqlInfoDataBuilder::new();
    // Server.
    b.append(SqlInfo::FlightSqlServerName, SERVER_NAME);
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, arrow::ARROW_VERSION);
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);

    // SQL language.
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    let keywords: Vec<String> = datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
        .iter()
        .map(|k| k.to_string())
        .collect();
    b.append(SqlInfo::SqlKeywords, keywords);
    b.append(SqlInfo::SqlNumericFunctions, strings(NUMERIC_FUNCTIONS));
    b.append(SqlInfo::SqlStringFunctions, strings(STRING_FUNCTIONS));
    b.append(SqlInfo::SqlSystemFunctions, strings(SYSTEM_FUNCTIONS));
    b.append(SqlInfo::SqlDatetimeFunctions, strings(DATETIME_FUNCTIONS));
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsConvert, supported_conversions());
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlInfo::SqlSupportedGroupBy,
        bits([SqlSupportedGroupBy::SqlGroupByUnrelated as i32]),
    );
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        bits([
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    b.append(
        SqlInfo::SqlAnsi92SupportedLevel,
        // SupportedAnsi92SqlGrammarLevel: entry (0) and intermediate (1).
        bits([0, 1]),
    );
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    // No procedures, indexes or privileges (SqlSupportedElementActions).
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        bits([
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
            SqlSupportedSubqueries::SqlSubqueriesInQuantifieds as i32,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        bits([
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    // Limits: 0 means "no limit or unknown".
    for id in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(id, 0i64);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    // SqlTransactionIsolationLevel::SqlTransactionNone
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i32);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, false);
    b.append(
        SqlInfo::SqlSupportedResultSetTypes,
        bits([SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    // SqlSupportedResultSetConcurrency::SqlResultSetConcurrencyReadOnly = 1
    let read_only = bits([1]);
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        0i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        read_only,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0i32,
    );
    b.append(SqlInfo::SqlBatchUpdatesSupported, true);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build()
        .map_err(|e| Status::internal(format!("building SqlInfo: {e}")))
}

/// `CAST` support between the SQL type families (`SqlSupportsConvert`).
fn supported_conversions() -> HashMap<i32, Vec<i32>> {
    use SqlSupportsConvert as C;
    let numeric = [
        C::SqlConvertBigint,
        C::SqlConvertBit,
        C::SqlConvertDecimal,
        C::SqlConvertFloat,
        C::SqlConvertInteger,
        C::SqlConvertNumeric,
        C::SqlConvertReal,
        C::SqlConvertSmallint,
        C::SqlConvertTinyint,
    ];
    let text = [
        C::SqlConvertChar,
        C::SqlConvertVarchar,
        C::SqlConvertLongvarchar,
    ];
    let temporal = [C::SqlConvertDate, C::SqlConvertTime, C::SqlConvertTimestamp];
    let mut out = HashMap::new();
    let all_targets: Vec<i32> = numeric.iter().chain(&text).map(|c| *c as i32).collect();
    for from in numeric {
        out.insert(from as i32, all_targets.clone());
    }
    let text_targets: Vec<i32> = numeric
        .iter()
        .chain(&text)
        .chain(&temporal)
        .map(|c| *c as i32)
        .collect();
    for from in text {
        out.insert(from as i32, text_targets.clone());
    }
    let temporal_targets: Vec<i32> = text.iter().chain(&temporal).map(|c| *c as i32).collect();
    for from in temporal {
        out.insert(from as i32, temporal_targets.clone());
    }
    out
}

/// One row of `GetXdbcTypeInfo`.
fn xdbc(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    quoted: bool,
) -> XdbcTypeInfo {
    let numeric = column_size.is_some() && !quoted;
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size,
        literal_prefix: quoted.then(|| "'".to_string()),
        literal_suffix: quoted.then(|| "'".to_string()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: quoted,
        searchable: Searchable::Full,
        unsigned_attribute: numeric.then_some(false),
        fixed_prec_scale: false,
        auto_increment: numeric.then_some(false),
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: numeric.then_some(10),
        interval_precision: None,
    }
}

/// The SQL types of `CREATE TABLE`, for `GetXdbcTypeInfo`.
pub fn xdbc_type_info() -> Result<XdbcTypeInfoData, Status> {
    use XdbcDataType as X;
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(xdbc("BOOLEAN", X::XdbcBit, Some(1), false));
    b.append(xdbc("TINYINT", X::XdbcTinyint, Some(3), false));
    b.append(xdbc("SMALLINT", X::XdbcSmallint, Some(5), false));
    b.append(xdbc("INTEGER", X::XdbcInteger, Some(10), false));
    b.append(xdbc("BIGINT", X::XdbcBigint, Some(19), false));
    b.append(xdbc("HUGEINT", X::XdbcNumeric, Some(38), false));
    b.append(xdbc("REAL", X::XdbcReal, Some(7), false));
    b.append(xdbc("DOUBLE", X::XdbcDouble, Some(15), false));
    b.append(XdbcTypeInfo {
        create_params: Some(strings(&["precision", "scale"])),
        fixed_prec_scale: true,
        minimum_scale: Some(0),
        maximum_scale: Some(38),
        ..xdbc("DECIMAL", X::XdbcDecimal, Some(38), false)
    });
    b.append(xdbc("VARCHAR", X::XdbcVarchar, None, true));
    b.append(xdbc("BLOB", X::XdbcVarbinary, None, true));
    for (name, sub) in [
        // XDBC_SUBCODE_DATE is an alias of XDBC_SUBCODE_YEAR (1).
        ("DATE", XdbcDatetimeSubcode::XdbcSubcodeYear),
        ("TIME", XdbcDatetimeSubcode::XdbcSubcodeTime),
        ("TIMESTAMP", XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
    ] {
        let dt = match sub {
            XdbcDatetimeSubcode::XdbcSubcodeYear => X::XdbcDate,
            XdbcDatetimeSubcode::XdbcSubcodeTime => X::XdbcTime,
            _ => X::XdbcTimestamp,
        };
        b.append(XdbcTypeInfo {
            sql_data_type: X::XdbcDatetime,
            datetime_subcode: Some(sub),
            ..xdbc(name, dt, None, true)
        });
    }
    b.append(XdbcTypeInfo {
        sql_data_type: X::XdbcInterval,
        ..xdbc("INTERVAL", X::XdbcInterval, None, true)
    });
    b.build()
        .map_err(|e| Status::internal(format!("building XdbcTypeInfo: {e}")))
}

/// Schema of `GetPrimaryKeys`.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of `GetImportedKeys`, `GetExportedKeys` and `GetCrossReference`.
pub fn foreign_keys_schema() -> SchemaRef {
    let utf8 = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        utf8("pk_catalog_name", true),
        utf8("pk_db_schema_name", true),
        utf8("pk_table_name", false),
        utf8("pk_column_name", false),
        utf8("fk_catalog_name", true),
        utf8("fk_db_schema_name", true),
        utf8("fk_table_name", false),
        utf8("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        utf8("fk_key_name", true),
        utf8("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// An empty reply of a key command: cluster tables have no declared keys.
pub fn empty(schema: SchemaRef) -> RecordBatch {
    RecordBatch::new_empty(schema)
}

/// The SQL type name, precision and scale of a column, as `CREATE TABLE`
/// spells it.
pub fn sql_type(dt: &DataType) -> (String, Option<i32>, Option<i32>) {
    let name = flight_worker::sqlgen::duckdb_type(dt).unwrap_or_else(|_| dt.to_string());
    let (precision, scale) = match dt {
        DataType::Boolean => (Some(1), None),
        DataType::Int8 | DataType::UInt8 => (Some(3), Some(0)),
        DataType::Int16 | DataType::UInt16 => (Some(5), Some(0)),
        DataType::Int32 | DataType::UInt32 => (Some(10), Some(0)),
        DataType::Int64 => (Some(19), Some(0)),
        DataType::UInt64 => (Some(20), Some(0)),
        DataType::Float32 => (Some(7), None),
        DataType::Float64 => (Some(15), None),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => {
            (Some(i32::from(*p)), Some(i32::from(*s)))
        }
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            (Some(i32::from(*p)), Some(i32::from(*s)))
        }
        _ => (None, None),
    };
    let name = match dt {
        // The precision and scale travel in their own keys.
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..)
            if name.starts_with("DECIMAL") =>
        {
            "DECIMAL".to_string()
        }
        _ => name,
    };
    (name, precision, scale)
}

/// A table's schema with the XDBC column metadata on every field (what the
/// JDBC driver's `getColumns` reads from `GetTables(include_schema)`).
pub fn with_column_metadata(table: &str, schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let (type_name, precision, scale) = sql_type(f.data_type());
            let mut md = f.metadata().clone();
            let mut put = |k: &str, v: String| {
                md.insert(format!("ARROW:FLIGHT:SQL:{k}"), v);
            };
            put("CATALOG_NAME", CATALOG.to_string());
            put("DB_SCHEMA_NAME", SCHEMA.to_string());
            // The JDBC driver reads SCHEMA_NAME.
            put("SCHEMA_NAME", SCHEMA.to_string());
            put("TABLE_NAME", table.to_string());
            put("TYPE_NAME", type_name);
            if let Some(p) = precision {
                put("PRECISION", p.to_string());
            }
            if let Some(s) = scale {
                put("SCALE", s.to_string());
            }
            put("IS_AUTO_INCREMENT", "0".into());
            put(
                "IS_CASE_SENSITIVE",
                if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                    "1"
                } else {
                    "0"
                }
                .into(),
            );
            put("IS_READ_ONLY", "0".into());
            put("IS_SEARCHABLE", "1".into());
            put("REMARKS", String::new());
            f.as_ref().clone().with_metadata(md)
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sql_info_covers_the_ids_drivers_read() {
        let info = sql_info().unwrap();
        let batch = arrow_flight::sql::CommandGetSqlInfo { info: vec![] }
            .into_builder(&info)
            .build()
            .unwrap();
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::UInt32Array>()
            .unwrap();
        let ids: std::collections::HashSet<u32> = ids.values().iter().copied().collect();
        for id in (0..=11).chain(100..=101).chain(500..=576) {
            if (6..=7).contains(&id) {
                continue; // Substrait versions: no Substrait support.
            }
            assert!(ids.contains(&id), "SqlInfo {id} missing");
        }
    }

    #[test]
    fn decimal_columns_carry_precision_and_scale() {
        let schema = Schema::new(vec![Field::new("d", DataType::Decimal128(12, 2), true)]);
        let with = with_column_metadata("t", &schema);
        let md = with.field(0).metadata();
        assert_eq!(md["ARROW:FLIGHT:SQL:TYPE_NAME"], "DECIMAL");
        assert_eq!(md["ARROW:FLIGHT:SQL:PRECISION"], "12");
        assert_eq!(md["ARROW:FLIGHT:SQL:SCALE"], "2");
        assert_eq!(md["ARROW:FLIGHT:SQL:TABLE_NAME"], "t");
    }
}
