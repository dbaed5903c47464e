//! Randomized differential testing: random SQL over a schema with
//! distributed (hash, co-located), round-robin, reference and empty tables,
//! each query run on the cluster and on single-process DuckDB over the same
//! rows; any difference is reported with the SQL and a minimized
//! reproduction.
//!
//! The generator avoids the documented semantic differences (`docs/sql.md`):
//! no integer `/`, no float→integer casts, explicit `NULLS FIRST/LAST` in
//! every `ORDER BY`, and a total order (every output column) whenever a
//! result is compared in order or cut by `LIMIT`.

use std::fmt::Write;

use arrow::array::RecordBatch;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Column types the generator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Float,
    Dec,
    Str,
    Date,
    Bool,
}

impl Ty {
    fn is_float(self) -> bool {
        // Decimals become floats in some expressions (AVG, * float).
        matches!(self, Ty::Float)
    }
}

struct TableDef {
    name: &'static str,
    options: &'static str,
    columns: &'static [(&'static str, Ty, &'static str)],
    rows: usize,
}

const FACT_COLUMNS: &[(&str, Ty, &str)] = &[
    ("k", Ty::Int, "BIGINT"),
    ("a", Ty::Int, "INTEGER"),
    ("b", Ty::Int, "BIGINT"),
    ("x", Ty::Float, "DOUBLE"),
    ("d", Ty::Dec, "DECIMAL(10,2)"),
    ("s", Ty::Str, "VARCHAR"),
    ("dt", Ty::Date, "DATE"),
    ("flag", Ty::Bool, "BOOLEAN"),
];

const TABLES: &[TableDef] = &[
    TableDef {
        name: "fact",
        options: "distribution = 'hash(k)', shards = 5",
        columns: FACT_COLUMNS,
        rows: 300,
    },
    TableDef {
        name: "dim2",
        options: "distribution = 'hash(k)', shards = 5",
        columns: &[
            ("k", Ty::Int, "BIGINT"),
            ("c", Ty::Int, "INTEGER"),
            ("y", Ty::Float, "DOUBLE"),
            ("t", Ty::Str, "VARCHAR"),
        ],
        rows: 150,
    },
    TableDef {
        name: "ref",
        options: "distribution = 'reference'",
        columns: &[
            ("id", Ty::Int, "INTEGER"),
            ("name", Ty::Str, "VARCHAR"),
            ("grp", Ty::Int, "INTEGER"),
            ("w", Ty::Dec, "DECIMAL(8,3)"),
        ],
        rows: 14,
    },
    TableDef {
        name: "rr",
        options: "distribution = 'round_robin', shards = 4",
        columns: &[
            ("id", Ty::Int, "BIGINT"),
            ("a", Ty::Int, "INTEGER"),
            ("s", Ty::Str, "VARCHAR"),
            ("x", Ty::Float, "DOUBLE"),
        ],
        rows: 80,
    },
    TableDef {
        name: "fempty",
        options: "distribution = 'hash(k)', shards = 3",
        columns: FACT_COLUMNS,
        rows: 0,
    },
];

const WORDS: &[&str] = &["a", "ab", "abc", "B", "b", "x y", "", "zz", "Abc", "q_1"];

/// The `CREATE TABLE` statements for the cluster (DuckDB gets them without
/// the `WITH` options).
pub fn create_statements() -> Vec<(String, String)> {
    TABLES
        .iter()
        .map(|t| {
            let cols = t
                .columns
                .iter()
                .map(|(n, _, ty)| format!("{n} {ty}"))
                .collect::<Vec<_>>()
                .join(", ");
            let base = format!("CREATE TABLE {} ({cols})", t.name);
            (format!("{base} WITH ({})", t.options), base)
        })
        .collect()
}

fn value_sql(rng: &mut StdRng, table: &str, col: &str, ty: Ty) -> String {
    let null_rate = match (table, col) {
        ("fact" | "dim2", "k") => 0.03,
        ("ref", "id") => 0.0,
        _ => 0.12,
    };
    if rng.random_bool(null_rate) {
        return "NULL".into();
    }
    match (ty, col) {
        (Ty::Int, "k") => rng.random_range(0..60).to_string(),
        (Ty::Int, "id") if table == "ref" => rng.random_range(-2..14).to_string(),
        (Ty::Int, "a" | "c" | "grp") => rng.random_range(-5..20).to_string(),
        (Ty::Int, _) => rng.random_range(-1000..1000).to_string(),
        (Ty::Float, _) => {
            // Multiples of 1/4: sums are exact in any order.
            let q: i32 = rng.random_range(-400..400);
            format!("{}", f64::from(q) / 4.0)
        }
        (Ty::Dec, _) => {
            let cents: i64 = rng.random_range(-100_000..100_000);
            let scale = if col == "w" { 3 } else { 2 };
            format!(
                "CAST('{}' AS DECIMAL({}, {scale}))",
                crate::slt::decimal_text(i128::from(cents), scale),
                if col == "w" { 8 } else { 10 }
            )
        }
        (Ty::Str, _) => format!("'{}'", WORDS.choose(rng).copied().unwrap_or("a")),
        (Ty::Date, _) => {
            let days: i64 = rng.random_range(0..500);
            format!("CAST('{}' AS DATE)", date_text(days))
        }
        (Ty::Bool, _) => if rng.random_bool(0.5) {
            "TRUE"
        } else {
            "FALSE"
        }
        .into(),
    }
}

/// `2020-01-01` plus `days`, as text.
fn date_text(days: i64) -> String {
    let base = 18262; // 2020-01-01 in days since the epoch
    let d = arrow::temporal_conversions::date32_to_datetime((base + days) as i32);
    d.map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "2020-01-01".into())
}

/// `INSERT` statements filling the tables (the same SQL for both engines).
pub fn insert_statements(seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_da7a);
    let mut out = Vec::new();
    for t in TABLES {
        if t.rows == 0 {
            continue;
        }
        let mut rows = Vec::with_capacity(t.rows);
        for _ in 0..t.rows {
            let vals: Vec<String> = t
                .columns
                .iter()
                .map(|(n, ty, _)| value_sql(&mut rng, t.name, n, *ty))
                .collect();
            rows.push(format!("({})", vals.join(", ")));
        }
        out.push(format!("INSERT INTO {} VALUES {}", t.name, rows.join(", ")));
    }
    out
}

/// One piece of a query with the table aliases it refers to.
#[derive(Debug, Clone)]
pub struct Item {
    pub sql: String,
    pub ty: Ty,
    pub uses: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Join {
    pub kind: &'static str,
    pub source: String,
    pub alias: String,
    pub on: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Dir {
    asc: bool,
    nulls_first: bool,
}

/// A generated query; [`Query::sql`] renders it.
#[derive(Debug, Clone)]
pub struct Query {
    pub base: (String, String),
    pub joins: Vec<Join>,
    pub filters: Vec<Item>,
    pub groups: Vec<Item>,
    pub select: Vec<Item>,
    pub aggregate: bool,
    pub having: Vec<Item>,
    pub distinct: bool,
    pub order: Option<Vec<Dir>>,
    pub limit: Option<(u64, u64)>,
    pub set_op: Option<(&'static str, Box<Query>)>,
}

impl Query {
    fn outputs(&self) -> Vec<&Item> {
        self.groups.iter().chain(self.select.iter()).collect()
    }

    fn body(&self) -> String {
        let mut s = String::from("SELECT ");
        if self.distinct {
            s.push_str("DISTINCT ");
        }
        let outs = self.outputs();
        let list: Vec<String> = outs
            .iter()
            .enumerate()
            .map(|(i, it)| format!("{} AS c{i}", it.sql))
            .collect();
        s.push_str(&list.join(", "));
        let _ = write!(s, " FROM {} AS {}", self.base.0, self.base.1);
        for j in &self.joins {
            let _ = write!(s, " {} {} AS {} ON {}", j.kind, j.source, j.alias, j.on);
        }
        if !self.filters.is_empty() {
            let f: Vec<&str> = self.filters.iter().map(|f| f.sql.as_str()).collect();
            let _ = write!(s, " WHERE {}", f.join(" AND "));
        }
        if !self.groups.is_empty() {
            let g: Vec<&str> = self.groups.iter().map(|g| g.sql.as_str()).collect();
            let _ = write!(s, " GROUP BY {}", g.join(", "));
        }
        if self.aggregate && !self.having.is_empty() {
            let h: Vec<&str> = self.having.iter().map(|h| h.sql.as_str()).collect();
            let _ = write!(s, " HAVING {}", h.join(" AND "));
        }
        s
    }

    /// Whether the result is compared in order.
    pub fn ordered(&self) -> bool {
        self.order.is_some()
    }

    pub fn sql(&self) -> String {
        let mut s = match &self.set_op {
            Some((op, right)) => format!("({}) {op} ({})", self.body(), right.body()),
            None => self.body(),
        };
        if let Some(dirs) = &self.order {
            let outs = self.outputs();
            // Exact columns first: float ties (summation order) must not
            // decide the order of rows.
            let mut pos: Vec<usize> = (0..outs.len())
                .filter(|&i| !outs[i].ty.is_float())
                .collect();
            pos.extend((0..outs.len()).filter(|&i| outs[i].ty.is_float()));
            let keys: Vec<String> = pos
                .iter()
                .enumerate()
                .map(|(n, &i)| {
                    let d = dirs.get(n).copied().unwrap_or(Dir {
                        asc: true,
                        nulls_first: false,
                    });
                    format!(
                        "{} {} {}",
                        i + 1,
                        if d.asc { "ASC" } else { "DESC" },
                        if d.nulls_first {
                            "NULLS FIRST"
                        } else {
                            "NULLS LAST"
                        }
                    )
                })
                .collect();
            let _ = write!(s, " ORDER BY {}", keys.join(", "));
            if let Some((limit, offset)) = self.limit {
                let _ = write!(s, " LIMIT {limit}");
                if offset > 0 {
                    let _ = write!(s, " OFFSET {offset}");
                }
            }
        }
        s
    }

    /// Smaller variants of this query, for minimization.
    pub fn reductions(&self) -> Vec<Query> {
        let mut out = Vec::new();
        if let Some((_, right)) = &self.set_op {
            let mut q = self.clone();
            q.set_op = None;
            out.push(q);
            let mut q = (**right).clone();
            q.order = self.order.clone();
            q.limit = self.limit;
            out.push(q);
        }
        for i in (0..self.joins.len()).rev() {
            let alias = self.joins[i].alias.clone();
            // Later joins may refer to this one in their ON.
            if self.joins[i + 1..].iter().any(|j| j.on.contains(&alias)) {
                continue;
            }
            let mut q = self.clone();
            q.joins.remove(i);
            let keep = |it: &Item| !it.uses.contains(&alias);
            q.filters.retain(keep);
            q.groups.retain(keep);
            q.select.retain(keep);
            q.having.retain(keep);
            if !q.outputs().is_empty() {
                out.push(q);
            }
        }
        for i in 0..self.joins.len() {
            if self.joins[i].kind != "JOIN" {
                let mut q = self.clone();
                q.joins[i].kind = "JOIN";
                out.push(q);
            }
        }
        for i in 0..self.filters.len() {
            let mut q = self.clone();
            q.filters.remove(i);
            out.push(q);
        }
        for i in 0..self.having.len() {
            let mut q = self.clone();
            q.having.remove(i);
            out.push(q);
        }
        if self.set_op.is_none() {
            for i in 0..self.groups.len() {
                if self.outputs().len() > 1 {
                    let mut q = self.clone();
                    q.groups.remove(i);
                    out.push(q);
                }
            }
            for i in 0..self.select.len() {
                if self.outputs().len() > 1 {
                    let mut q = self.clone();
                    q.select.remove(i);
                    if q.aggregate && q.select.is_empty() && q.having.is_empty() {
                        q.aggregate = false;
                        q.distinct = true;
                    }
                    out.push(q);
                }
            }
        }
        if self.distinct {
            let mut q = self.clone();
            q.distinct = false;
            out.push(q);
        }
        if self.limit.is_some() {
            let mut q = self.clone();
            q.limit = None;
            out.push(q);
        }
        if self.order.is_some() && self.limit.is_none() {
            let mut q = self.clone();
            q.order = None;
            out.push(q);
        }
        out
    }
}

/// A column in scope: `alias.name` of type `ty`.
#[derive(Debug, Clone)]
struct Col {
    alias: String,
    name: String,
    ty: Ty,
}

impl Col {
    fn item(&self) -> Item {
        Item {
            sql: format!("{}.{}", self.alias, self.name),
            ty: self.ty,
            uses: vec![self.alias.clone()],
        }
    }
}

/// The random query generator.
pub struct Generator {
    rng: StdRng,
    sub: usize,
}

fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.name == name)
}

fn merge_uses(items: &[&Item]) -> Vec<String> {
    let mut u: Vec<String> = items.iter().flat_map(|i| i.uses.iter().cloned()).collect();
    u.sort();
    u.dedup();
    u
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            sub: 0,
        }
    }

    fn p(&mut self, prob: f64) -> bool {
        self.rng.random_bool(prob)
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        let i = self.rng.random_range(0..xs.len());
        &xs[i]
    }

    fn cols_of(name: &str, alias: &str) -> Vec<Col> {
        table(name)
            .map(|t| {
                t.columns
                    .iter()
                    .map(|(n, ty, _)| Col {
                        alias: alias.into(),
                        name: (*n).into(),
                        ty: *ty,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn literal(&mut self, ty: Ty) -> String {
        match ty {
            Ty::Int => self.rng.random_range(-10..60).to_string(),
            Ty::Float => format!("{}", f64::from(self.rng.random_range(-400..400)) / 4.0),
            Ty::Dec => format!(
                "CAST('{}' AS DECIMAL(10,2))",
                crate::slt::decimal_text(i128::from(self.rng.random_range(-100_000..100_000)), 2)
            ),
            Ty::Str => format!("'{}'", self.pick(WORDS)),
            Ty::Date => format!("DATE '{}'", date_text(self.rng.random_range(0..500))),
            Ty::Bool => if self.p(0.5) { "TRUE" } else { "FALSE" }.into(),
        }
    }

    fn col_of(&mut self, scope: &[Col], ty: Option<Ty>) -> Option<Col> {
        let cands: Vec<&Col> = scope
            .iter()
            .filter(|c| ty.is_none_or(|t| c.ty == t))
            .collect();
        if cands.is_empty() {
            return None;
        }
        Some(cands[self.rng.random_range(0..cands.len())].clone())
    }

    /// A scalar expression of type `ty` (or any type) over `scope`.
    fn expr(&mut self, scope: &[Col], ty: Option<Ty>, depth: u32) -> Option<Item> {
        let col = self.col_of(scope, ty)?;
        let base = col.item();
        if depth > 1 || self.p(0.6) {
            return Some(base);
        }
        let c = &base.sql;
        let u = base.uses.clone();
        let (sql, ty) = match col.ty {
            Ty::Int => match self.rng.random_range(0..9) {
                0 => (format!("({c} + {})", self.literal(Ty::Int)), Ty::Int),
                1 => (format!("({c} * {})", self.rng.random_range(-3..4)), Ty::Int),
                2 => (format!("abs({c})"), Ty::Int),
                3 => (format!("coalesce({c}, {})", self.literal(Ty::Int)), Ty::Int),
                4 => (format!("({c} % {})", self.rng.random_range(2..7)), Ty::Int),
                5 => {
                    let p = self.pred(scope, depth + 1);
                    let other = self.literal(Ty::Int);
                    return Some(Item {
                        sql: format!("CASE WHEN {} THEN {c} ELSE {other} END", p.sql),
                        ty: Ty::Int,
                        uses: merge_uses(&[&base, &p]),
                    });
                }
                6 if ty.is_none() => (format!("({c} * 0.5)"), Ty::Float),
                7 if ty.is_none() => (format!("CAST({c} AS DOUBLE)"), Ty::Float),
                _ => (format!("(- {c})"), Ty::Int),
            },
            Ty::Float => match self.rng.random_range(0..4) {
                0 => (format!("({c} * 2.5)"), Ty::Float),
                1 => (format!("abs({c})"), Ty::Float),
                2 => (format!("({c} + {})", self.literal(Ty::Float)), Ty::Float),
                _ => (format!("coalesce({c}, 0.0)"), Ty::Float),
            },
            Ty::Dec => match self.rng.random_range(0..3) {
                0 => (format!("({c} + {c})"), Ty::Dec),
                1 => (format!("({c} * 3)"), Ty::Dec),
                _ => (format!("(- {c})"), Ty::Dec),
            },
            Ty::Str => match self.rng.random_range(0..8) {
                0 => (format!("upper({c})"), Ty::Str),
                1 => (format!("lower({c})"), Ty::Str),
                2 => (format!("({c} || '-')"), Ty::Str),
                3 => (format!("substr({c}, 1, 2)"), Ty::Str),
                4 => (format!("coalesce({c}, 'none')"), Ty::Str),
                5 if ty.is_none() => (format!("ascii({c})"), Ty::Int),
                6 if ty.is_none() => (format!("length({c})"), Ty::Int),
                _ => (format!("concat({c}, 'z')"), Ty::Str),
            },
            Ty::Date => match self.rng.random_range(0..2) {
                0 if ty.is_none() => (format!("extract(month FROM {c})"), Ty::Int),
                _ => (format!("({c} + INTERVAL '3 days')"), Ty::Date),
            },
            Ty::Bool => (format!("(NOT {c})"), Ty::Bool),
        };
        Some(Item { sql, ty, uses: u })
    }

    /// A boolean predicate over `scope`.
    fn pred(&mut self, scope: &[Col], depth: u32) -> Item {
        let fallback = Item {
            sql: "TRUE".into(),
            ty: Ty::Bool,
            uses: vec![],
        };
        let r = self.rng.random_range(0..100);
        if depth < 2 && r < 12 {
            let a = self.pred(scope, depth + 1);
            let b = self.pred(scope, depth + 1);
            let op = if self.p(0.5) { "AND" } else { "OR" };
            return Item {
                sql: format!("({} {op} {})", a.sql, b.sql),
                ty: Ty::Bool,
                uses: merge_uses(&[&a, &b]),
            };
        }
        if depth < 2 && r < 16 {
            let a = self.pred(scope, depth + 1);
            return Item {
                sql: format!("(NOT {})", a.sql),
                ..a
            };
        }
        let Some(e) = self.expr(scope, None, depth + 1) else {
            return fallback;
        };
        let u = e.uses.clone();
        let sql = match (r, e.ty) {
            (_, Ty::Bool) => {
                if self.p(0.5) {
                    e.sql.clone()
                } else {
                    format!("({} IS NOT TRUE)", e.sql)
                }
            }
            (16..=25, _) => format!("({} IS NULL)", e.sql),
            (26..=32, _) => format!("({} IS NOT NULL)", e.sql),
            (33..=42, t) if t != Ty::Bool => {
                let lo = self.literal(t);
                let hi = self.literal(t);
                let not = if self.p(0.2) { "NOT " } else { "" };
                format!("({} {not}BETWEEN {lo} AND {hi})", e.sql)
            }
            (43..=52, t) => {
                let n = self.rng.random_range(1..5);
                let mut list: Vec<String> = (0..n).map(|_| self.literal(t)).collect();
                if self.p(0.15) {
                    list.push("NULL".into());
                }
                let not = if self.p(0.3) { "NOT " } else { "" };
                format!("({} {not}IN ({}))", e.sql, list.join(", "))
            }
            (53..=58, Ty::Str) => {
                let pats = ["a%", "%b%", "_b%", "%", "A%", "%y", "q\\_%"];
                let pat = *self.pick(&pats);
                // Only patterns without backslashes: DuckDB has no default
                // LIKE escape character, we use `\`.
                let pat = if pat.contains('\\') { "q%" } else { pat };
                let op = *self.pick(&["LIKE", "NOT LIKE", "ILIKE"]);
                format!("({} {op} '{pat}')", e.sql)
            }
            (59..=70, t) => {
                // Comparison with another expression of the same type.
                match self.expr(scope, Some(t), depth + 1) {
                    Some(o) => {
                        let op = *self.pick(&["=", "<>", "<", "<=", ">", ">="]);
                        return Item {
                            sql: format!("({} {op} {})", e.sql, o.sql),
                            ty: Ty::Bool,
                            uses: merge_uses(&[&e, &o]),
                        };
                    }
                    None => format!("({} IS NULL)", e.sql),
                }
            }
            (71..=80, Ty::Int) if depth == 0 => return self.subquery_pred(scope, e),
            (_, t) => {
                let op = *self.pick(&["=", "<>", "<", "<=", ">", ">="]);
                format!("({} {op} {})", e.sql, self.literal(t))
            }
        };
        Item {
            sql,
            ty: Ty::Bool,
            uses: u,
        }
    }

    /// `IN` / `NOT IN` / `EXISTS` / `NOT EXISTS` / scalar subquery predicates.
    fn subquery_pred(&mut self, scope: &[Col], outer: Item) -> Item {
        self.sub += 1;
        let alias = format!("s{}", self.sub);
        let tname = *self.pick(&["fact", "dim2", "ref", "rr", "fempty"]);
        let inner = Self::cols_of(tname, &alias);
        let inner_int = self
            .col_of(&inner, Some(Ty::Int))
            .map(|c| c.item().sql)
            .unwrap_or_else(|| "1".into());
        let inner_pred = if self.p(0.6) {
            format!(" AND {}", self.pred(&inner, 1).sql)
        } else {
            String::new()
        };
        let mut uses = outer.uses.clone();
        let sql = match self.rng.random_range(0..6) {
            0 => format!(
                "({} IN (SELECT {inner_int} FROM {tname} AS {alias} WHERE TRUE{inner_pred}))",
                outer.sql
            ),
            1 => {
                let nn = if self.p(0.6) {
                    format!(" AND {inner_int} IS NOT NULL")
                } else {
                    String::new()
                };
                format!(
                    "({} NOT IN (SELECT {inner_int} FROM {tname} AS {alias} WHERE TRUE{nn}{inner_pred}))",
                    outer.sql
                )
            }
            2 | 3 => {
                let not = if self.rng.random_range(0..6) < 3 {
                    ""
                } else {
                    "NOT "
                };
                format!(
                    "({not}EXISTS (SELECT 1 FROM {tname} AS {alias} WHERE {inner_int} = {}{inner_pred}))",
                    outer.sql
                )
            }
            4 => {
                let agg = *self.pick(&["min", "max", "avg", "count", "sum"]);
                let op = *self.pick(&["<", ">=", "="]);
                format!(
                    "({} {op} (SELECT {agg}({inner_int}) FROM {tname} AS {alias} WHERE TRUE{inner_pred}))",
                    outer.sql
                )
            }
            _ => {
                // Correlated scalar aggregate.
                let agg = *self.pick(&["max", "min", "count"]);
                let corr = self
                    .col_of(scope, Some(Ty::Int))
                    .map(|c| c.item())
                    .unwrap_or_else(|| outer.clone());
                uses.extend(corr.uses.iter().cloned());
                format!(
                    "({} <= (SELECT {agg}({inner_int}) FROM {tname} AS {alias} WHERE {inner_int} = {}{inner_pred}))",
                    outer.sql, corr.sql
                )
            }
        };
        uses.sort();
        uses.dedup();
        Item {
            sql,
            ty: Ty::Bool,
            uses,
        }
    }

    fn aggregate(&mut self, scope: &[Col]) -> Item {
        let r = self.rng.random_range(0..100);
        let (sql, ty, uses) = if r < 12 {
            ("count(*)".to_string(), Ty::Int, vec![])
        } else {
            let Some(e) = self.expr(scope, None, 1) else {
                return Item {
                    sql: "count(*)".into(),
                    ty: Ty::Int,
                    uses: vec![],
                };
            };
            let numeric = matches!(e.ty, Ty::Int | Ty::Float | Ty::Dec);
            let u = e.uses.clone();
            match r {
                12..=25 => (format!("count({})", e.sql), Ty::Int, u),
                26..=33 => (format!("count(DISTINCT {})", e.sql), Ty::Int, u),
                34..=49 if numeric => (format!("sum({})", e.sql), e.ty, u),
                50..=59 if numeric => (format!("avg({})", e.sql), Ty::Float, u),
                60..=63 if e.ty == Ty::Int => (format!("sum(DISTINCT {})", e.sql), Ty::Int, u),
                64..=69 if e.ty == Ty::Bool => {
                    let f = if self.p(0.5) { "bool_and" } else { "bool_or" };
                    (format!("{f}({})", e.sql), Ty::Bool, u)
                }
                _ if e.ty == Ty::Bool => (format!("count({})", e.sql), Ty::Int, u),
                _ => {
                    let f = if self.p(0.5) { "min" } else { "max" };
                    (format!("{f}({})", e.sql), e.ty, u)
                }
            }
        };
        if self.p(0.12) && !sql.contains("DISTINCT") {
            let p = self.pred(scope, 1);
            let mut uses = uses;
            uses.extend(p.uses.iter().cloned());
            uses.sort();
            uses.dedup();
            return Item {
                sql: format!("{sql} FILTER (WHERE {})", p.sql),
                ty,
                uses,
            };
        }
        Item { sql, ty, uses }
    }

    fn window(&mut self, scope: &[Col]) -> Option<Item> {
        let part = self.expr(scope, None, 2)?;
        let ord = self.expr(scope, None, 2)?;
        let dir = if self.p(0.5) {
            "ASC NULLS LAST"
        } else {
            "DESC NULLS FIRST"
        };
        let num = self.col_of(scope, Some(Ty::Int)).map(|c| c.item());
        let uses = merge_uses(&[&part, &ord]);
        let (sql, ty) = match self.rng.random_range(0..5) {
            0 => (
                format!(
                    "rank() OVER (PARTITION BY {} ORDER BY {} {dir})",
                    part.sql, ord.sql
                ),
                Ty::Int,
            ),
            1 => (
                format!("dense_rank() OVER (ORDER BY {} {dir})", ord.sql),
                Ty::Int,
            ),
            2 => (
                format!("count(*) OVER (PARTITION BY {})", part.sql),
                Ty::Int,
            ),
            3 if num.is_some() => {
                let n = num.clone()?;
                return Some(Item {
                    sql: format!(
                        "sum({}) OVER (PARTITION BY {} ORDER BY {} {dir})",
                        n.sql, part.sql, ord.sql
                    ),
                    ty: Ty::Int,
                    uses: merge_uses(&[&part, &ord, &n]),
                });
            }
            _ => (
                format!("max({}) OVER (PARTITION BY {})", ord.sql, part.sql),
                ord.ty,
            ),
        };
        Some(Item { sql, ty, uses })
    }

    /// FROM and JOINs; returns the scope.
    fn from(&mut self) -> ((String, String), Vec<Join>, Vec<Col>) {
        let bases = ["fact", "fact", "fact", "dim2", "ref", "rr", "fempty"];
        let b = *self.pick(&bases);
        let mut scope = Self::cols_of(b, "t0");
        let mut joins = Vec::new();
        let n_joins = match self.rng.random_range(0..10) {
            0..=3 => 0,
            4..=8 => 1,
            _ => 2,
        };
        for j in 1..=n_joins {
            let alias = format!("t{j}");
            let partner = *self.pick(&["fact", "dim2", "dim2", "ref", "ref", "rr", "fempty"]);
            let pcols = Self::cols_of(partner, &alias);
            // Co-located key join when both sides have a hash key `k`.
            let left_k = scope
                .iter()
                .find(|c| c.name == "k" && c.ty == Ty::Int)
                .cloned();
            let on = if left_k.is_some() && pcols.iter().any(|c| c.name == "k") && self.p(0.6) {
                let l = left_k.map(|c| c.item().sql).unwrap_or_default();
                format!("{l} = {alias}.k")
            } else {
                let l = self.col_of(&scope, Some(Ty::Int)).map(|c| c.item().sql);
                let r = self.col_of(&pcols, Some(Ty::Int)).map(|c| c.item().sql);
                match (l, r) {
                    (Some(l), Some(r)) => format!("{l} = {r}"),
                    _ => "TRUE".into(),
                }
            };
            let on = if self.p(0.15) {
                let mut both = scope.clone();
                both.extend(pcols.iter().cloned());
                let extra = self.pred(&both, 1).sql;
                format!("{on} AND {extra}")
            } else {
                on
            };
            let kind = match self.rng.random_range(0..10) {
                0..=4 => "JOIN",
                5..=6 => "LEFT JOIN",
                7..=8 => "RIGHT JOIN",
                _ => "FULL JOIN",
            };
            joins.push(Join {
                kind,
                source: partner.into(),
                alias,
                on,
            });
            scope.extend(pcols);
        }
        ((b.to_string(), "t0".to_string()), joins, scope)
    }

    fn plain_items(&mut self, scope: &[Col], n: usize, windows: bool) -> Vec<Item> {
        let mut out = Vec::new();
        for _ in 0..n {
            if windows
                && self.p(0.15)
                && let Some(w) = self.window(scope)
            {
                out.push(w);
                continue;
            }
            if let Some(e) = self.expr(scope, None, 0) {
                out.push(e);
            }
        }
        if out.is_empty() {
            out.push(Item {
                sql: "1".into(),
                ty: Ty::Int,
                uses: vec![],
            });
        }
        out
    }

    fn order(&mut self) -> Vec<Dir> {
        (0..16)
            .map(|_| Dir {
                asc: self.p(0.5),
                nulls_first: self.p(0.5),
            })
            .collect()
    }

    /// One random query.
    pub fn query(&mut self) -> Query {
        self.sub = 0;
        if self.p(0.08) {
            return self.set_query();
        }
        let (base, joins, scope) = self.from();
        let n_filters = self.rng.random_range(0..3);
        let filters = (0..n_filters).map(|_| self.pred(&scope, 0)).collect();
        let aggregate = self.p(0.5);
        let (groups, select, having) = if aggregate {
            let ng = self.rng.random_range(0..3);
            let groups: Vec<Item> = (0..ng).filter_map(|_| self.expr(&scope, None, 1)).collect();
            let na = self.rng.random_range(1..4);
            let select = (0..na).map(|_| self.aggregate(&scope)).collect();
            let having = if self.p(0.2) {
                let a = self.aggregate(&scope);
                let lit = match a.ty {
                    Ty::Int | Ty::Float | Ty::Dec => "1".to_string(),
                    t => self.literal(t),
                };
                let op = *self.pick(&[">", "<", "<>", ">="]);
                let sql = if a.ty == Ty::Bool {
                    format!("({} IS NOT NULL)", a.sql)
                } else {
                    format!("({} {op} {lit})", a.sql)
                };
                vec![Item {
                    sql,
                    ty: Ty::Bool,
                    uses: a.uses,
                }]
            } else {
                vec![]
            };
            (groups, select, having)
        } else {
            let n = self.rng.random_range(1..5);
            (vec![], self.plain_items(&scope, n, true), vec![])
        };
        let distinct = !aggregate && self.p(0.15);
        let order = if self.p(0.5) {
            Some(self.order())
        } else {
            None
        };
        let limit = if order.is_some() && self.p(0.6) {
            let off = if self.p(0.3) {
                self.rng.random_range(0..5)
            } else {
                0
            };
            Some((self.rng.random_range(0..12), off))
        } else {
            None
        };
        Query {
            base,
            joins,
            filters,
            groups,
            select,
            aggregate,
            having,
            distinct,
            order,
            limit,
            set_op: None,
        }
    }

    fn simple(&mut self, types: Option<&[Ty]>) -> Query {
        let t = *self.pick(&["fact", "dim2", "ref", "rr", "fempty"]);
        let scope = Self::cols_of(t, "t0");
        let select: Vec<Item> = match types {
            Some(tys) => tys
                .iter()
                .map(|ty| {
                    self.expr(&scope, Some(*ty), 1).unwrap_or(Item {
                        sql: match ty {
                            Ty::Int => "1".into(),
                            Ty::Str => "'c'".into(),
                            _ => "NULL".into(),
                        },
                        ty: *ty,
                        uses: vec![],
                    })
                })
                .collect(),
            None => {
                let n = self.rng.random_range(1..3);
                (0..n)
                    .map(|_| {
                        let ty = *self.pick(&[Ty::Int, Ty::Str, Ty::Int]);
                        self.expr(&scope, Some(ty), 1).unwrap_or(Item {
                            sql: "1".into(),
                            ty: Ty::Int,
                            uses: vec![],
                        })
                    })
                    .collect()
            }
        };
        let filters = if self.p(0.6) {
            vec![self.pred(&scope, 1)]
        } else {
            vec![]
        };
        Query {
            base: (t.to_string(), "t0".into()),
            joins: vec![],
            filters,
            groups: vec![],
            select,
            aggregate: false,
            having: vec![],
            distinct: false,
            order: None,
            limit: None,
            set_op: None,
        }
    }

    fn set_query(&mut self) -> Query {
        let mut left = self.simple(None);
        let types: Vec<Ty> = left.select.iter().map(|i| i.ty).collect();
        let right = self.simple(Some(&types));
        let op = *self.pick(&["UNION ALL", "UNION", "INTERSECT", "EXCEPT", "UNION ALL"]);
        left.set_op = Some((op, Box::new(right)));
        if self.p(0.5) {
            left.order = Some(self.order());
            if self.p(0.5) {
                left.limit = Some((self.rng.random_range(0..10), 0));
            }
        }
        left
    }
}

/// The outcome of one query on both engines.
#[derive(Debug)]
pub enum Outcome {
    /// Same answer.
    Agree,
    /// Both engines refused the query (a generator limit, not a bug).
    BothFailed(String),
    /// Different answers, or only one engine failed.
    Differ(String),
}

/// A cluster connection as the differential tester sees it.
#[async_trait::async_trait]
pub trait ClusterConn: Send {
    async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, String>;
    async fn update(&mut self, sql: &str) -> Result<(), String>;
}

/// Creates and fills the schema on the cluster and on DuckDB.
pub async fn setup(
    cluster: &mut dyn ClusterConn,
    duck: &duckdb::Connection,
    seed: u64,
) -> Result<(), String> {
    for (ours, theirs) in create_statements() {
        cluster
            .update(&ours)
            .await
            .map_err(|e| format!("{ours}: {e}"))?;
        duck.execute_batch(&theirs)
            .map_err(|e| format!("DuckDB {theirs}: {e}"))?;
    }
    for ins in insert_statements(seed) {
        cluster
            .update(&ins)
            .await
            .map_err(|e| format!("cluster insert: {e}"))?;
        duck.execute_batch(&ins)
            .map_err(|e| format!("DuckDB insert: {e}"))?;
    }
    Ok(())
}

/// Runs `sql` on both engines and compares.
pub async fn check(
    cluster: &mut dyn ClusterConn,
    duck: &duckdb::Connection,
    sql: &str,
    ordered: bool,
) -> Outcome {
    let expected = tokio::task::block_in_place(|| crate::reference::query(duck, sql));
    let actual = cluster.query(sql).await;
    match (expected, actual) {
        (Ok(e), Ok(a)) => match crate::compare::compare_results(&e, &a, ordered) {
            Ok(()) => Outcome::Agree,
            Err(msg) => Outcome::Differ(msg),
        },
        (Err(e), Err(a)) => Outcome::BothFailed(format!("DuckDB: {e}\ncluster: {a}")),
        (Err(e), Ok(_)) => Outcome::Differ(format!("only DuckDB failed: {e}")),
        (Ok(_), Err(a)) => Outcome::Differ(format!("only the cluster failed: {a}")),
    }
}

/// Greedily shrinks a differing query while it still differs.
pub async fn minimize(
    cluster: &mut dyn ClusterConn,
    duck: &duckdb::Connection,
    query: &Query,
) -> (Query, String) {
    let mut best = query.clone();
    let mut msg = String::new();
    let mut budget = 200;
    'outer: loop {
        for cand in best.reductions() {
            if budget == 0 {
                break 'outer;
            }
            budget -= 1;
            if let Outcome::Differ(m) = check(cluster, duck, &cand.sql(), cand.ordered()).await {
                best = cand;
                msg = m;
                continue 'outer;
            }
        }
        break;
    }
    if msg.is_empty()
        && let Outcome::Differ(m) = check(cluster, duck, &best.sql(), best.ordered()).await
    {
        msg = m;
    }
    (best, msg)
}

/// Totals of a differential run.
#[derive(Debug, Default)]
pub struct Report {
    pub queries: usize,
    pub agreed: usize,
    pub both_failed: usize,
    /// `(original SQL, minimized SQL, difference)`.
    pub differences: Vec<(String, String, String)>,
}

impl Report {
    pub fn summary(&self, seed: u64) -> String {
        let mut s = format!(
            "seed {seed}: {} queries, {} agreed, {} refused by both engines, {} differ",
            self.queries,
            self.agreed,
            self.both_failed,
            self.differences.len()
        );
        for (orig, min, diff) in &self.differences {
            let _ = write!(
                s,
                "\n\n--- query:\n{orig}\n--- minimized reproduction:\n{min}\n--- difference:\n{diff}"
            );
        }
        s
    }
}

/// Runs `count` random queries from `seed`; stops collecting after
/// `max_differences` differences.
pub async fn run(
    cluster: &mut dyn ClusterConn,
    duck: &duckdb::Connection,
    seed: u64,
    count: usize,
    max_differences: usize,
    mut progress: impl FnMut(usize, &Report),
) -> Report {
    let mut generator = Generator::new(seed);
    let mut report = Report::default();
    for i in 0..count {
        let q = generator.query();
        let sql = q.sql();
        report.queries += 1;
        match check(cluster, duck, &sql, q.ordered()).await {
            Outcome::Agree => report.agreed += 1,
            Outcome::BothFailed(_) => report.both_failed += 1,
            Outcome::Differ(diff) => {
                let (min, min_diff) = minimize(cluster, duck, &q).await;
                let diff = if min_diff.is_empty() { diff } else { min_diff };
                report.differences.push((sql, min.sql(), diff));
                if report.differences.len() >= max_differences {
                    break;
                }
            }
        }
        progress(i + 1, &report);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic() {
        let a: Vec<String> = {
            let mut g = Generator::new(7);
            (0..50).map(|_| g.query().sql()).collect()
        };
        let b: Vec<String> = {
            let mut g = Generator::new(7);
            (0..50).map(|_| g.query().sql()).collect()
        };
        assert_eq!(a, b);
        assert_eq!(insert_statements(1), insert_statements(1));
    }
}
