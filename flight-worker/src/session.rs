//! Flight RPC sessions: the `SetSessionOptions`, `GetSessionOptions` and
//! `CloseSession` actions, on the coordinator and on the workers.
//!
//! A session is named by the `arrow_flight_session_id` cookie (the name the
//! Flight spec suggests, and what the JDBC and ADBC drivers send back). The
//! server sets the cookie on the first `SetSessionOptions`; sessions live in
//! memory and expire after an idle time. Clients that never set options
//! have no session and get the defaults.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arrow_flight::Action;
use fsql_proto::flight_session::{
    CloseSessionResult, GetSessionOptionsResult, SessionOptionValue, SetSessionOptionsRequest,
    SetSessionOptionsResult, close_session_result, session_option_value::OptionValue,
    set_session_options_result,
};
use parking_lot::Mutex;
use prost::Message;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

/// The cookie naming a session.
pub const COOKIE: &str = "arrow_flight_session_id";
pub const ACTION_SET: &str = "SetSessionOptions";
pub const ACTION_GET: &str = "GetSessionOptions";
pub const ACTION_CLOSE: &str = "CloseSession";

/// The one catalog and schema of the cluster.
pub const CATALOG: &str = "fsql";
pub const SCHEMA: &str = "public";

/// Option names every server of the cluster accepts.
pub const OPTION_CATALOG: &str = "catalog";
pub const OPTION_SCHEMA: &str = "schema";
/// `false` runs queries on the coordinator over plain shard scans (for
/// comparing with the distributed plan).
pub const OPTION_DISTRIBUTED: &str = "distributed";
/// `false` answers every query with one endpoint at the coordinator, for
/// clients that read only the first endpoint or cannot reach the workers.
pub const OPTION_DIRECT: &str = "direct";
/// The same as a request header, for clients without sessions
/// (flightsql-dbapi passes URL query parameters as headers).
pub const DIRECT_HEADER: &str = "fsql-direct";

/// Idle time after which a session is forgotten.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(3600);
/// Sessions kept at most; the least recently used go first.
const MAX_SESSIONS: usize = 100_000;

/// The effective options of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub catalog: String,
    pub schema: String,
    pub distributed: bool,
    pub direct: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            catalog: CATALOG.to_string(),
            schema: SCHEMA.to_string(),
            distributed: true,
            direct: true,
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" => Some(true),
        "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

type ErrorValue = set_session_options_result::ErrorValue;

impl SessionSettings {
    /// Applies one option; a valueless option resets it to the default.
    fn apply(&mut self, name: &str, value: Option<&OptionValue>) -> Result<(), ErrorValue> {
        let default = Self::default();
        match (name, value) {
            (OPTION_CATALOG, None) => self.catalog = default.catalog,
            (OPTION_CATALOG, Some(OptionValue::StringValue(v))) if v == CATALOG => {
                self.catalog = v.clone()
            }
            (OPTION_SCHEMA, None) => self.schema = default.schema,
            (OPTION_SCHEMA, Some(OptionValue::StringValue(v))) if v == SCHEMA => {
                self.schema = v.clone()
            }
            (OPTION_DISTRIBUTED, None) => self.distributed = default.distributed,
            (OPTION_DIRECT, None) => self.direct = default.direct,
            (OPTION_DISTRIBUTED | OPTION_DIRECT, Some(v)) => {
                let v = match v {
                    OptionValue::BoolValue(v) => *v,
                    OptionValue::StringValue(v) => parse_bool(v).ok_or(ErrorValue::InvalidValue)?,
                    _ => return Err(ErrorValue::InvalidValue),
                };
                if name == OPTION_DIRECT {
                    self.direct = v;
                } else {
                    self.distributed = v;
                }
            }
            (OPTION_CATALOG | OPTION_SCHEMA, Some(_)) => {
                return Err(ErrorValue::InvalidValue);
            }
            _ => return Err(ErrorValue::InvalidName),
        }
        Ok(())
    }

    fn to_options(&self) -> HashMap<String, SessionOptionValue> {
        let value = |v| SessionOptionValue {
            option_value: Some(v),
        };
        HashMap::from([
            (
                OPTION_CATALOG.to_string(),
                value(OptionValue::StringValue(self.catalog.clone())),
            ),
            (
                OPTION_SCHEMA.to_string(),
                value(OptionValue::StringValue(self.schema.clone())),
            ),
            (
                OPTION_DISTRIBUTED.to_string(),
                value(OptionValue::BoolValue(self.distributed)),
            ),
            (
                OPTION_DIRECT.to_string(),
                value(OptionValue::BoolValue(self.direct)),
            ),
        ])
    }
}

#[derive(Debug)]
struct Entry {
    settings: SessionSettings,
    last_used: Instant,
}

/// The sessions of one server.
#[derive(Debug)]
pub struct Sessions {
    idle_ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

/// What a session action answers: its result bodies and the `set-cookie`
/// header to send with them.
pub struct ActionReply {
    pub results: Vec<arrow_flight::Result>,
    pub set_cookie: Option<String>,
}

impl ActionReply {
    /// The response carrying the results (made into a stream by `body`)
    /// and the cookie.
    pub fn into_response<T>(
        self,
        body: impl FnOnce(Vec<arrow_flight::Result>) -> T,
    ) -> tonic::Response<T> {
        let mut response = tonic::Response::new(body(self.results));
        if let Some(cookie) = self.set_cookie
            && let Ok(value) = MetadataValue::try_from(cookie.as_str())
        {
            response.metadata_mut().insert("set-cookie", value);
        }
        response
    }
}

/// The session id in a request's cookies, if any.
pub fn session_id(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(DEFAULT_IDLE_TTL)
    }
}

impl Sessions {
    pub fn new(idle_ttl: Duration) -> Self {
        Self {
            idle_ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `action` is one of the session actions.
    pub fn handles(action: &str) -> bool {
        matches!(action, ACTION_SET | ACTION_GET | ACTION_CLOSE)
    }

    /// The settings of the request's session (the defaults without one).
    /// An unknown or expired session is NOT_FOUND: the client believes
    /// options are set that are not.
    pub fn settings(&self, metadata: &MetadataMap) -> Result<SessionSettings, Status> {
        let mut settings = match session_id(metadata) {
            None => SessionSettings::default(),
            Some(id) => {
                let mut entries = self.entries.lock();
                self.expire(&mut entries);
                let entry = entries.get_mut(&id).ok_or_else(expired)?;
                entry.last_used = Instant::now();
                entry.settings.clone()
            }
        };
        if let Some(v) = metadata.get(DIRECT_HEADER) {
            settings.direct = v.to_str().ok().and_then(parse_bool).ok_or_else(|| {
                Status::invalid_argument(format!("{DIRECT_HEADER} must be true or false"))
            })?;
        }
        Ok(settings)
    }

    fn expire(&self, entries: &mut HashMap<String, Entry>) {
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.last_used) < self.idle_ttl);
        while entries.len() >= MAX_SESSIONS {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
    }

    /// Runs a session action (see [`Sessions::handles`]).
    pub fn action(&self, action: &Action, metadata: &MetadataMap) -> Result<ActionReply, Status> {
        let id = session_id(metadata);
        let mut entries = self.entries.lock();
        self.expire(&mut entries);
        let reply = |body: Vec<u8>, set_cookie| ActionReply {
            results: vec![arrow_flight::Result { body: body.into() }],
            set_cookie,
        };
        match action.r#type.as_str() {
            ACTION_SET => {
                let request =
                    SetSessionOptionsRequest::decode(action.body.as_ref()).map_err(|e| {
                        Status::invalid_argument(format!("malformed {ACTION_SET}: {e}"))
                    })?;
                let (id, set_cookie) = match id {
                    Some(id) if entries.contains_key(&id) => (id, None),
                    Some(_) => return Err(expired()),
                    None => {
                        let id = uuid::Uuid::new_v4().simple().to_string();
                        let cookie = format!("{COOKIE}={id}");
                        (id, Some(cookie))
                    }
                };
                let entry = entries.entry(id).or_insert_with(|| Entry {
                    settings: SessionSettings::default(),
                    last_used: Instant::now(),
                });
                entry.last_used = Instant::now();
                let mut errors = HashMap::new();
                // Apply in name order so a reply does not depend on map order.
                let options: BTreeMap<_, _> = request.session_options.into_iter().collect();
                for (name, value) in options {
                    if let Err(e) = entry.settings.apply(&name, value.option_value.as_ref()) {
                        errors.insert(name, set_session_options_result::Error { value: e as i32 });
                    }
                }
                Ok(reply(
                    SetSessionOptionsResult { errors }.encode_to_vec(),
                    set_cookie,
                ))
            }
            ACTION_GET => {
                let settings = match id {
                    None => SessionSettings::default(),
                    Some(id) => match entries.get_mut(&id) {
                        Some(entry) => {
                            entry.last_used = Instant::now();
                            entry.settings.clone()
                        }
                        None => return Err(expired()),
                    },
                };
                let result = GetSessionOptionsResult {
                    session_options: settings.to_options(),
                };
                Ok(reply(result.encode_to_vec(), None))
            }
            ACTION_CLOSE => {
                if let Some(id) = id
                    && entries.remove(&id).is_none()
                {
                    return Err(expired());
                }
                let result = CloseSessionResult {
                    status: close_session_result::Status::Closed as i32,
                };
                Ok(reply(
                    result.encode_to_vec(),
                    Some(format!("{COOKIE}=; Max-Age=0")),
                ))
            }
            other => Err(Status::invalid_argument(format!(
                "{other} is not a session action"
            ))),
        }
    }
}

/// The `SetSessionOptions` action setting `options` (what a client sends).
pub fn set_options_action(options: &[(&str, OptionValue)]) -> Action {
    let request = SetSessionOptionsRequest {
        session_options: options
            .iter()
            .map(|(name, value)| {
                let value = SessionOptionValue {
                    option_value: Some(value.clone()),
                };
                (name.to_string(), value)
            })
            .collect(),
    };
    Action::new(ACTION_SET, request.encode_to_vec())
}

fn expired() -> Status {
    Status::not_found(
        "the session does not exist: it was closed or expired after being idle; \
         set the session options again",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn set_get_close() {
        let sessions = Sessions::default();
        let reply = sessions
            .action(
                &set_options_action(&[
                    (OPTION_DISTRIBUTED, OptionValue::BoolValue(false)),
                    (OPTION_CATALOG, OptionValue::StringValue("nope".into())),
                    ("color", OptionValue::StringValue("red".into())),
                ]),
                &MetadataMap::new(),
            )
            .unwrap();
        let cookie = reply.set_cookie.unwrap();
        let result = SetSessionOptionsResult::decode(reply.results[0].body.as_ref()).unwrap();
        assert_eq!(result.errors.len(), 2);
        assert_eq!(result.errors["color"].value, ErrorValue::InvalidName as i32);
        assert_eq!(
            result.errors[OPTION_CATALOG].value,
            ErrorValue::InvalidValue as i32
        );

        let mut md = MetadataMap::new();
        md.insert("cookie", format!("other=1; {cookie}").parse().unwrap());
        let settings = sessions.settings(&md).unwrap();
        assert!(!settings.distributed);
        assert_eq!(settings.catalog, CATALOG);

        let close = Action::new(ACTION_CLOSE, Vec::new());
        sessions.action(&close, &md).unwrap();
        assert_eq!(
            sessions.settings(&md).unwrap_err().code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            sessions.settings(&MetadataMap::new()).unwrap(),
            SessionSettings::default()
        );
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::new(Duration::from_millis(1));
        let reply = sessions
            .action(&set_options_action(&[]), &MetadataMap::new())
            .unwrap();
        let mut md = MetadataMap::new();
        md.insert("cookie", reply.set_cookie.unwrap().parse().unwrap());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            sessions.settings(&md).unwrap_err().code(),
            tonic::Code::NotFound
        );
    }
}
