//! The status page: `GET /` on the coordinator's HTTP port.
//!
//! One server-rendered HTML page (inline CSS, no JavaScript, no external
//! resources; the browser reloads it every [`REFRESH_SECS`] seconds) showing
//! what the `system` tables show: the workers, the tables and their shards,
//! the running statements and the last [`RECENT_QUERIES`] finished ones.
//! Each part runs one SQL query against the `system` schema through the
//! [`Engine`] (planned and executed directly, so the page's own queries do
//! not appear in `system.queries`) and renders its result generically:
//! column headers from the schema, values with arrow's display formatting,
//! every string HTML-escaped (statement text and error messages are user
//! input). A part whose query fails or times out shows the error in its
//! section; the page itself is always 200.
//!
//! It only reads: nothing here changes the catalog or the workers.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::TryStreamExt;

use crate::engine::Engine;

/// Seconds between the browser's reloads of the page.
pub const REFRESH_SECS: u32 = 5;

/// Finished statements shown (the most recent first).
pub const RECENT_QUERIES: usize = 50;

/// Longest one part's query may take before its section shows an error
/// (well within the HTTP server's handler timeout).
pub const PART_TIMEOUT: Duration = Duration::from_secs(5);

/// Decimal places shown of floating-point values.
const FLOAT_DECIMALS: i32 = 3;

/// How timestamps are shown (the `system` tables' are UTC: `+00:00`).
const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f %Z";

/// One table of the page: a heading, the id of its element and the query
/// filling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub id: &'static str,
    pub title: &'static str,
    pub sql: String,
}

/// One `<section>`: a heading (with the section's `id`) and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub id: &'static str,
    pub title: &'static str,
    pub parts: Vec<Part>,
}

/// A part's query result: its schema and batches, or why there is none.
pub type PartResult = Result<(SchemaRef, Vec<RecordBatch>), String>;

/// The page's sections, in order.
pub fn sections() -> Vec<Section> {
    let part = |id, title, sql: &str| Part {
        id,
        title,
        sql: sql.to_string(),
    };
    vec![
        Section {
            id: "workers",
            title: "Workers",
            parts: vec![part(
                "workers-table",
                "",
                "SELECT * FROM system.workers ORDER BY id",
            )],
        },
        Section {
            id: "tables",
            title: "Tables",
            parts: vec![part(
                "tables-table",
                "",
                "SELECT * FROM system.tables ORDER BY name",
            )],
        },
        Section {
            id: "shards",
            title: "Shards",
            parts: vec![part(
                "shards-table",
                "",
                "SELECT * FROM system.shards ORDER BY \"table\", shard",
            )],
        },
        Section {
            id: "queries",
            title: "Queries",
            parts: vec![
                part(
                    "queries-running",
                    "Running",
                    "SELECT * FROM system.queries WHERE state = 'running' ORDER BY started",
                ),
                Part {
                    id: "queries-recent",
                    title: "Recent",
                    sql: format!(
                        "SELECT * FROM system.queries WHERE state <> 'running' \
                         ORDER BY started DESC LIMIT {RECENT_QUERIES}"
                    ),
                },
            ],
        },
    ]
}

/// The whole page for `engine`'s cluster now.
pub async fn render(engine: &Engine) -> String {
    let sections = sections();
    let results: Vec<Vec<PartResult>> = futures::future::join_all(
        sections
            .iter()
            .map(|s| futures::future::join_all(s.parts.iter().map(|p| run_part(engine, &p.sql)))),
    )
    .await;
    let live = engine.catalog.workers().len();
    page(
        env!("CARGO_PKG_VERSION"),
        live,
        SystemTime::now(),
        &sections,
        &results,
    )
}

/// Runs one part's query to completion, within [`PART_TIMEOUT`].
async fn run_part(engine: &Engine, sql: &str) -> PartResult {
    let query_id = format!("status-{}", uuid::Uuid::new_v4());
    let work = async {
        let planned = engine.plan_query(sql, None, &query_id, true).await?;
        let stream = engine.execute(planned).await?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok::<_, crate::Error>((schema, batches))
    };
    match tokio::time::timeout(PART_TIMEOUT, work).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(e)) => {
            tracing::warn!(sql, "status page: {e}");
            Err(e.to_string())
        }
        Err(_) => {
            tracing::warn!(sql, "status page: no answer within {PART_TIMEOUT:?}");
            Err(format!("no answer within {} s", PART_TIMEOUT.as_secs_f64()))
        }
    }
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.5em 2em;\
color:#1d2330;background:#fafbfc;font-size:14px}\
h1{font-size:1.5em;margin:0 0 .2em}\
h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #d5dae3;padding-bottom:.2em}\
h3{font-size:1em;margin:1em 0 .4em;color:#4a5366}\
.summary{color:#4a5366;margin:0 0 1em}\
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08)}\
th,td{border:1px solid #dfe3ea;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#eef1f6;font-weight:600}\
td{max-width:36em;white-space:pre-wrap;overflow-wrap:break-word;\
font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}\
td.num{text-align:right;white-space:nowrap}\
td.time{min-width:10em}\
td.null{color:#9aa3b2}\
td.empty{color:#6b7385;font-style:italic;font-family:inherit}\
tr.state-failed td{background:#fdecec}\
tr.state-running td{background:#eaf4ff}\
tr.state-cancelled td{background:#f6f1e4}\
tr.state-gone td{color:#8a93a3}\
.error{color:#a4161a;background:#fdecec;border:1px solid #f3c0c0;padding:.5em .8em;\
white-space:pre-wrap;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}";

/// The page from the parts' results (`results[i][j]` is part `j` of
/// section `i`).
pub fn page(
    version: &str,
    live_workers: usize,
    now: SystemTime,
    sections: &[Section],
    results: &[Vec<PartResult>],
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        out,
        "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">"
    );
    out.push_str("<title>fsql cluster status</title>\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<h1>fsql cluster status</h1>\n");
    let plural = if live_workers == 1 { "" } else { "s" };
    let _ = writeln!(
        out,
        "<p class=\"summary\" id=\"summary\">coordinator <b id=\"version\">{}</b> \
         &middot; <b id=\"live-workers\">{live_workers}</b> live worker{plural} \
         &middot; as of {} &middot; refreshes every {REFRESH_SECS} s</p>",
        escape(version),
        escape(&format_time(now)),
    );
    for (i, section) in sections.iter().enumerate() {
        let _ = writeln!(
            out,
            "<section id=\"{}\">\n<h2>{}</h2>",
            escape(section.id),
            escape(section.title)
        );
        for (j, part) in section.parts.iter().enumerate() {
            if !part.title.is_empty() {
                let _ = writeln!(out, "<h3>{}</h3>", escape(part.title));
            }
            match results.get(i).and_then(|r| r.get(j)) {
                Some(Ok((schema, batches))) => out.push_str(&table_html(part.id, schema, batches)),
                Some(Err(e)) => out.push_str(&error_html(part.id, e)),
                None => out.push_str(&error_html(part.id, "not run")),
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// A failed part: its error message in a box with the part's id.
pub fn error_html(id: &str, error: &str) -> String {
    format!(
        "<div class=\"error\" id=\"{}\">could not read this: {}</div>\n",
        escape(id),
        escape(error)
    )
}

/// `batches` as one HTML table: a header row from `schema`, one row per
/// record (a `state` column also names the row's class, `state-<value>`),
/// or a single "none" row.
pub fn table_html(id: &str, schema: &SchemaRef, batches: &[RecordBatch]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "<table id=\"{}\">", escape(id));
    out.push_str("<thead><tr>");
    for field in schema.fields() {
        let _ = write!(out, "<th>{}</th>", escape(field.name()));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    let options = FormatOptions::new()
        .with_display_error(true)
        .with_null("")
        .with_timestamp_tz_format(Some(TIMESTAMP_FORMAT));
    let state_column = schema.index_of("state").ok();
    let mut rows = 0;
    for batch in batches {
        let columns: Vec<ArrayRef> = batch.columns().iter().map(rounded).collect();
        let formatters: Vec<Option<ArrayFormatter<'_>>> = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            rows += 1;
            let state = state_column
                .and_then(|c| batch.columns().get(c))
                .filter(|c| c.is_valid(row))
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .map(|c| class_name(c.value(row)));
            match state {
                Some(state) if !state.is_empty() => {
                    let _ = write!(out, "<tr class=\"state-{state}\">");
                }
                _ => out.push_str("<tr>"),
            }
            for (column, formatter) in columns.iter().zip(&formatters) {
                let class = if column.is_null(row) {
                    " class=\"null\""
                } else if column.data_type().is_numeric() {
                    " class=\"num\""
                } else if column.data_type().is_temporal() {
                    " class=\"time\""
                } else {
                    ""
                };
                let text = match formatter {
                    Some(f) => f.value(row).to_string(),
                    None => format!("({})", column.data_type()),
                };
                let _ = write!(out, "<td{class}>{}</td>", escape(&text));
            }
            out.push_str("</tr>\n");
        }
    }
    if rows == 0 {
        let _ = writeln!(
            out,
            "<tr><td class=\"empty\" colspan=\"{}\">none</td></tr>",
            schema.fields().len().max(1)
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// Floats rounded to [`FLOAT_DECIMALS`] places (durations in milliseconds
/// read better as `21.636` than `21.636418000000003`); other arrays as they
/// are.
fn rounded(column: &ArrayRef) -> ArrayRef {
    let scale = 10f64.powi(FLOAT_DECIMALS);
    match column.data_type() {
        DataType::Float64 => {
            let floats = column.as_primitive::<Float64Type>();
            Arc::new(floats.unary::<_, Float64Type>(|v| (v * scale).round() / scale))
        }
        DataType::Float32 => {
            let floats = column.as_primitive::<Float32Type>();
            let scale = scale as f32;
            Arc::new(floats.unary::<_, Float32Type>(|v| (v * scale).round() / scale))
        }
        _ => Arc::clone(column),
    }
}

/// `text` safe inside HTML text and double- or single-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The part of `value` usable in a class name: ASCII letters, digits, `-`
/// and `_`.
fn class_name(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// `t` the way the tables show timestamps.
fn format_time(t: SystemTime) -> String {
    let micros = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let array: Arc<dyn Array> =
        Arc::new(TimestampMicrosecondArray::from(vec![micros]).with_timezone("UTC"));
    let options = FormatOptions::new()
        .with_display_error(true)
        .with_timestamp_tz_format(Some(TIMESTAMP_FORMAT));
    ArrayFormatter::try_new(array.as_ref(), &options)
        .map(|f| f.value(0).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    fn queries_batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("sql", DataType::Utf8, true),
            Field::new(
                "started",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("duration_ms", DataType::Float64, true),
            Field::new("rows", DataType::Int64, true),
            Field::new("state", DataType::Utf8, true),
            Field::new("error", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["q1", "q2"])),
                Arc::new(StringArray::from(vec![
                    "SELECT '<script>alert(1)</script>' AS \"x\" & 'y'",
                    "SELECT * FROM nope",
                ])),
                Arc::new(TimestampMicrosecondArray::from(vec![0, 1_500_000]).with_timezone("UTC")),
                Arc::new(Float64Array::from(vec![Some(21.636418000000003), None])),
                Arc::new(Int64Array::from(vec![Some(42), None])),
                Arc::new(StringArray::from(vec!["finished", "failed\" onclick=\"x"])),
                Arc::new(StringArray::from(vec![
                    None,
                    Some("table <nope> not found"),
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn escape_covers_the_html_specials() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain text, ünïcödé"), "plain text, ünïcödé");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn table_has_headers_escaped_values_and_row_states() {
        let batch = queries_batch();
        let html = table_html("queries-recent", &batch.schema(), &[batch]);
        assert!(html.starts_with("<table id=\"queries-recent\">"), "{html}");
        assert!(
            html.contains(
                "<th>id</th><th>sql</th><th>started</th><th>duration_ms</th><th>rows</th>\
                 <th>state</th><th>error</th>"
            ),
            "{html}"
        );
        // User text is escaped, never markup.
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains(
                "<td>SELECT &#39;&lt;script&gt;alert(1)&lt;/script&gt;&#39; AS &quot;x&quot; \
                 &amp; &#39;y&#39;</td>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<td>table &lt;nope&gt; not found</td>"),
            "{html}"
        );
        // Timestamps, numbers and NULLs.
        assert!(
            html.contains("<td class=\"time\">1970-01-01 00:00:01.500 +00:00</td>"),
            "{html}"
        );
        assert!(html.contains("<td class=\"num\">21.636</td>"), "{html}");
        assert!(html.contains("<td class=\"num\">42</td>"), "{html}");
        assert!(html.contains("<td class=\"null\"></td>"), "{html}");
        // The state names the row's class, reduced to a safe class name.
        assert!(html.contains("<tr class=\"state-finished\">"), "{html}");
        assert!(
            html.contains("<tr class=\"state-failedonclickx\">"),
            "{html}"
        );
        assert_eq!(html.matches("<tr class=").count(), 2, "{html}");
    }

    #[test]
    fn empty_result_is_one_none_row() {
        let batch = queries_batch();
        let html = table_html("t", &batch.schema(), &[batch.slice(0, 0)]);
        assert!(
            html.contains("<tr><td class=\"empty\" colspan=\"7\">none</td></tr>"),
            "{html}"
        );
        let html = table_html("t", &batch.schema(), &[]);
        assert!(html.contains("colspan=\"7\">none</td>"), "{html}");
    }

    #[test]
    fn page_has_sections_refresh_summary_and_errors_in_place() {
        let sections = sections();
        let batch = queries_batch();
        let ok = || Ok((batch.schema(), vec![batch.clone()]));
        let results = vec![
            vec![ok()],
            vec![Err("worker <w1> & friends unreachable".to_string())],
            vec![ok()],
            vec![ok(), ok()],
        ];
        let html = page("1.2.3", 2, UNIX_EPOCH, &sections, &results);
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains("<title>fsql cluster status</title>"),
            "{html}"
        );
        assert!(
            html.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
            "{html}"
        );
        assert!(
            html.contains("coordinator <b id=\"version\">1.2.3</b>"),
            "{html}"
        );
        assert!(
            html.contains("<b id=\"live-workers\">2</b> live workers"),
            "{html}"
        );
        assert!(html.contains("1970-01-01 00:00:00.000 +00:00"), "{html}");
        for id in ["workers", "tables", "shards", "queries"] {
            assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        // The failed part shows its (escaped) error; the others still render.
        assert!(
            html.contains(
                "<div class=\"error\" id=\"tables-table\">could not read this: \
                 worker &lt;w1&gt; &amp; friends unreachable</div>"
            ),
            "{html}"
        );
        assert!(html.contains("<table id=\"shards-table\">"), "{html}");
        // The queries section has its two parts; a missing result is an error.
        assert!(html.contains("<h3>Running</h3>"), "{html}");
        assert!(html.contains("<table id=\"queries-recent\">"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        let html = page("1.2.3", 1, UNIX_EPOCH, &sections, &[]);
        assert!(html.contains("</b> live worker &middot;"), "{html}");
        assert!(
            html.contains("<div class=\"error\" id=\"workers-table\">could not read this: not run"),
            "{html}"
        );
    }

    #[test]
    fn recent_queries_are_limited() {
        let sql = &sections()[3].parts[1].sql;
        assert!(sql.ends_with(&format!("LIMIT {RECENT_QUERIES}")), "{sql}");
    }
}
