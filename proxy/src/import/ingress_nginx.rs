//! ingress-nginx's canary Ingresses as weir routes.
//!
//! The import takes the controller's own steps (`store.go`,
//! `controller.go`), so that a request goes where ingress-nginx sends it:
//! 1. The Ingresses of the class, in the controller's order
//!    (`sortIngressSlice`): by `metadata.creationTimestamp`, equal times by
//!    `namespace/name` in reverse.
//! 2. One *upstream* per Service port (`createUpstreams`), set up by the
//!    first Ingress that names it (or the last that names it as its
//!    `defaultBackend`). When that Ingress is a canary, the upstream is a
//!    canary, with that Ingress's rules, and serves no path of its own.
//! 3. One server per host of the main Ingresses (`createServers`): its `/`
//!    goes to the `defaultBackend` of the first Ingress with that host, else
//!    to the controller's 404. The catch-all server's `/` goes to the first
//!    rule-less Ingress's `defaultBackend`.
//! 4. One location per host, `path` (empty: `/`) and `pathType` (unset or
//!    `ImplementationSpecific`: `Prefix`); the first Ingress keeps it.
//! 5. Each path of a canary Ingress joins the upstream of the location of
//!    its host with the same path and pathType, as written: `/api/` is not
//!    `/api` (`mergeAlternativeBackends`). The canary then belongs to that
//!    upstream: every path routed to that Service, on any host, gets it, and
//!    only the first canary that joined counts (`balancer.lua` reads
//!    `alternative_backends[1]`). A canary path that joins nothing removes
//!    the canary's upstream altogether, wherever it had joined.
//!
//! Per request, ingress-nginx decides (`route_to_alternative_balancer` in
//! its `balancer.lua`):
//! 1. `canary-by-header` H: with `canary-by-header-value` V, H = V → canary;
//!    else with `canary-by-header-pattern` P, H matching P → canary; else
//!    H = `always` → canary, H = `never` → main. Other values fall through.
//! 2. `canary-by-cookie` C: `always` → canary, `never` → main.
//! 3. `canary-weight` W of `canary-weight-total` T (used only above 100):
//!    canary with probability W/T, per request.
//!
//! weir decides force key, then cohort, then weight, so:
//! - H alone is `force = { header = H }`, C alone `force = { cookie = C }`;
//! - H with V is `cohort = { header = H, values = [V] }` (and C, if any, the
//!   force key); a pattern that is an anchored list of literals
//!   (`^(a|b)$`) is a cohort too, any other is reported and dropped;
//! - H and C together: H is the force key and C a cohort of `always`;
//!   C = `never` then follows the weight (reported when the weight is not 0);
//! - W/T is the route's `weight`, a percentage to 0.01 %.
//!
//! Whatever routes differently from ingress-nginx, or is not imported, is a
//! [`Note`] with `lost` set; what the reader should know but routes alike
//! is a note without.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::kube::{Backend, Ingress, Manifests, Port};

const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// How to import.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// Only Ingresses of this class (`spec.ingressClassName` or the
    /// `kubernetes.io/ingress.class` annotation), and those without one.
    pub(crate) class: String,
    /// The cluster's DNS domain, for `SERVICE.NAMESPACE.svc.DOMAIN:PORT`.
    pub(crate) cluster_domain: String,
    /// Addresses given for Services (`NAME` or `NAMESPACE/NAME` → addrs),
    /// instead of their cluster DNS names.
    pub(crate) services: BTreeMap<String, Vec<String>>,
}

/// Something the reader of the import must know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Note {
    /// Some requests are routed differently from ingress-nginx, or a
    /// setting was not imported.
    pub(crate) lost: bool,
    /// What and why, naming the Ingress; one line, no control characters.
    pub(crate) text: String,
}

/// The import: a weir config and what it could not carry over.
#[derive(Debug)]
pub(crate) struct Import {
    /// The config (TOML).
    pub(crate) text: String,
    /// In the order found.
    pub(crate) notes: Vec<Note>,
}

/// Why there is no config: the notes found so far (they often say why),
/// and the errors.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) notes: Vec<Note>,
    pub(crate) errors: Vec<String>,
}

#[derive(Debug)]
struct BackendOut {
    name: String,
    addrs: Vec<String>,
    http2: bool,
    tls: bool,
    about: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Header,
    Cookie,
}

impl Source {
    fn key(self) -> &'static str {
        match self {
            Source::Header => "header",
            Source::Cookie => "cookie",
        }
    }
}

/// A canary's rules in weir's terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Policy {
    /// Basis points (0.01 %).
    weight: u32,
    force: Option<(Source, String)>,
    cohort: Option<(Source, String, Vec<String>)>,
}

#[derive(Debug)]
struct RouteOut {
    name: String,
    host: Option<String>,
    path: String,
    stable: String,
    canary: Option<(String, Policy)>,
    about: String,
}

/// A canary Ingress's rules as ingress-nginx reads its annotations
/// (`annotations/canary/main.go`); an unreadable value is unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Canary {
    /// `canary-weight` (0 when unset).
    weight: i64,
    /// `canary-weight-total`, if given.
    total: Option<i64>,
    header: Option<String>,
    value: Option<String>,
    pattern: Option<String>,
    cookie: Option<String>,
}

/// An Ingress the controller serves.
struct Ing<'a> {
    ing: &'a Ingress,
    /// `namespace/name`, for messages.
    id: String,
    /// Its rules, when it is a canary.
    canary: Option<Canary>,
}

/// One Service port of one namespace: what ingress-nginx calls an upstream
/// (`upstreamName`: `namespace-service-port`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct UpstreamKey {
    namespace: String,
    service: String,
    port: Port,
}

impl UpstreamKey {
    fn of(namespace: &str, b: &Backend) -> Result<UpstreamKey, &'static str> {
        let (service, port) = b.service()?;
        Ok(UpstreamKey { namespace: namespace.to_string(), service: service.to_string(), port })
    }
}

impl std::fmt::Display for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let port = match &self.port {
            Port::Number(n) => n.to_string(),
            Port::Name(n) => n.clone(),
        };
        write!(f, "Service {}/{} port {port}", self.namespace, self.service)
    }
}

/// An upstream as the controller has set it up.
#[derive(Debug)]
struct Upstream {
    /// The Ingress whose settings it has (an index into `Importer::ings`):
    /// a canary Ingress makes it a canary, with that Ingress's rules.
    owner: usize,
    /// The canaries merged into it, in order; only the first is used.
    alternatives: Vec<Alternative>,
    /// Removed by the controller: this canary Ingress (an index) names it
    /// where no main path matches.
    removed_by: Option<usize>,
}

/// A canary merged into an upstream.
#[derive(Debug)]
struct Alternative {
    key: UpstreamKey,
    /// The canary Ingress that merged it first.
    by: usize,
    /// The locations (host, path, pathType) its canary paths matched.
    sites: Vec<(Option<String>, String, PathType)>,
}

/// A path's type as the controller sees it (`SetDefaultNGINXPathType`:
/// unset and `ImplementationSpecific` are `Prefix`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum PathType {
    /// `location PATH/` and `location = PATH`: whole segments.
    Prefix,
    /// `location = PATH`.
    Exact,
    /// Anything else (the API server refuses it): `location PATH`.
    Other(String),
}

impl PathType {
    fn of(t: Option<&str>) -> PathType {
        match t {
            None | Some("Prefix" | "ImplementationSpecific") => PathType::Prefix,
            Some("Exact") => PathType::Exact,
            Some(other) => PathType::Other(other.to_string()),
        }
    }

    fn name(&self) -> &str {
        match self {
            PathType::Prefix => "Prefix",
            PathType::Exact => "Exact",
            PathType::Other(t) => t,
        }
    }
}

/// A location of a server.
#[derive(Debug)]
struct Location {
    path: String,
    path_type: PathType,
    /// `None`: the controller's default backend (404).
    backend: Option<UpstreamKey>,
    /// `/` set up with the server, until a path `/` (`Prefix`) takes it
    /// (`IsDefBackend`).
    default: bool,
    /// Its backend is an Ingress's `defaultBackend`.
    via_default_backend: bool,
    /// The Ingress that set it (none: the catch-all's own 404).
    ingress: Option<usize>,
}

/// A server: a host, or the catch-all (`None`, ingress-nginx's `_`).
#[derive(Debug)]
struct Server {
    host: Option<String>,
    locations: Vec<Location>,
}

/// The import under way: the controller's view of the Ingresses, step by
/// step, then the weir config made from it.
struct Importer<'a> {
    input: &'a Manifests,
    opts: &'a Options,
    notes: Vec<Note>,
    errors: Vec<String>,
    /// The Ingresses served, in the controller's order.
    ings: Vec<Ing<'a>>,
    upstreams: BTreeMap<UpstreamKey, Upstream>,
    /// In the order made; the catch-all first.
    servers: Vec<Server>,
    backends: Vec<BackendOut>,
    backend_names: BTreeMap<UpstreamKey, String>,
    routes: Vec<RouteOut>,
    route_names: BTreeSet<String>,
    /// Upstreams and policies already reported on (notes once each).
    reported: BTreeSet<String>,
    /// (canary Ingress, its Service) for each canary merged somewhere.
    merged: BTreeSet<(usize, UpstreamKey)>,
}

/// Imports the Ingresses of `input`; `Err` when no config can be made (a
/// Service port named but not found, nothing to import), with the notes.
pub(crate) fn import(input: &Manifests, opts: &Options) -> Result<Import, Failed> {
    let mut im = Importer {
        input,
        opts,
        notes: Vec::new(),
        errors: Vec::new(),
        ings: Vec::new(),
        upstreams: BTreeMap::new(),
        servers: Vec::new(),
        backends: Vec::new(),
        backend_names: BTreeMap::new(),
        routes: Vec::new(),
        route_names: BTreeSet::new(),
        reported: BTreeSet::new(),
        merged: BTreeSet::new(),
    };
    im.select();
    im.create_upstreams();
    im.create_servers();
    im.add_locations();
    im.merge_canaries();
    im.emit_routes();
    if im.routes.is_empty() && im.errors.is_empty() {
        im.errors.push("no Ingress rule to import (an Ingress with spec.rules or spec.defaultBackend)".to_string());
    }
    if !im.errors.is_empty() {
        return Err(Failed { notes: im.notes, errors: im.errors });
    }
    let text = im.render();
    if let Err(e) = weir_control::config::parse(&text) {
        return Err(Failed { notes: im.notes, errors: vec![format!("the imported config is not valid: {e}")] });
    }
    Ok(Import { text, notes: im.notes })
}

/// The Ingress's class, if it names one.
fn class_of(ing: &Ingress) -> Option<&str> {
    ing.spec
        .ingress_class_name
        .as_deref()
        .or_else(|| ing.annotations.get("kubernetes.io/ingress.class").map(|s| s.as_str()))
}

fn annotation<'i>(ing: &'i Ingress, name: &str) -> Option<&'i str> {
    ing.annotations.get(&format!("{PREFIX}{name}")).map(|s| s.as_str())
}

/// The Ingress's `defaultBackend` (`v1beta1`: `backend`).
fn default_backend(ing: &Ingress) -> Option<&Backend> {
    ing.spec.default_backend.as_ref().or(ing.spec.backend.as_ref())
}

/// A rule's host as a server name: lower case, `None` for the catch-all.
fn host_of(host: Option<&str>) -> Option<String> {
    host.filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase())
}

/// A host for messages (`*` for the catch-all).
fn host_text(host: &Option<String>) -> &str {
    host.as_deref().unwrap_or("*")
}

/// Go's `strconv.ParseBool`, as ingress-nginx reads `canary`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

const CANARY_KEYS: [&str; 6] = [
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
];

/// ingress-nginx's `BasicCharsRegex`, checked with spaces removed
/// (`ValidateRegex(BasicCharsRegex, true)`): header, value and cookie.
fn basic_chars(v: &str) -> bool {
    v.chars().filter(|&c| c != ' ').all(|c| c.is_ascii_alphanumeric() || "/-._~:".contains(c))
}

/// ingress-nginx's `IsValidRegex`, for `canary-by-header-pattern` (no
/// spaces).
fn regex_chars(v: &str) -> bool {
    v.chars().all(|c| c.is_ascii_alphanumeric() || "/-._~:^$[](){}*+?|&=\\".contains(c))
}

/// The canary annotations as ingress-nginx reads them: whether the
/// Ingress is a canary, its rules, and notes on values it does not take.
fn read_canary(ing: &Ingress, id: &str) -> (bool, Canary, Vec<Note>) {
    let mut notes = Vec::new();
    let mut info = |text: String| notes.push(Note { lost: false, text: clean(&text) });
    let enabled = match annotation(ing, "canary") {
        None | Some("") => false,
        Some(v) => parse_bool(v).unwrap_or_else(|| {
            info(format!("Ingress {id}: canary \"{v}\" is not a Go boolean: ingress-nginx reads it as false"));
            false
        }),
    };
    // GetIntAnnotation: Go's strconv.Atoi on the value as written (no
    // trimming), the default when it fails.
    let mut int = |k: &str, default: i64| match annotation(ing, k) {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                info(format!(
                    "Ingress {id}: {k} \"{v}\" is not a number (Go's strconv.Atoi): ingress-nginx reads {default}"
                ));
                None
            }
        },
    };
    let weight = int("canary-weight", 0).unwrap_or(0);
    let total = int("canary-weight-total", 100);
    // GetStringAnnotation: validated as written, then trimmed; invalid or
    // empty is unset.
    let mut string = |k: &str, valid: fn(&str) -> bool, allowed: &str| match annotation(ing, k) {
        None => None,
        Some(v) if !valid(v) => {
            info(format!(
                "Ingress {id}: {k} \"{v}\" has characters ingress-nginx refuses (it allows {allowed}): it reads it as \
                 unset, and so does the import"
            ));
            None
        }
        Some(v) => Some(v.trim().to_string()).filter(|v| !v.is_empty()),
    };
    const BASIC: &str = "letters, digits, spaces and / - . _ ~ :";
    let header = string("canary-by-header", basic_chars, BASIC);
    let value = string("canary-by-header-value", basic_chars, BASIC);
    let pattern = string(
        "canary-by-header-pattern",
        regex_chars,
        "letters, digits and / - . _ ~ : ^ $ [ ] ( ) { } * + ? | & = \\",
    );
    let cookie = string("canary-by-cookie", basic_chars, BASIC);
    let c = Canary { weight, total, header, value, pattern, cookie };
    if !enabled {
        let set = [
            ("canary-weight", c.weight > 0),
            ("canary-by-header", c.header.is_some()),
            ("canary-by-header-value", c.value.is_some()),
            ("canary-by-header-pattern", c.pattern.is_some()),
            ("canary-by-cookie", c.cookie.is_some()),
        ];
        if let Some((k, _)) = set.iter().find(|(_, set)| *set) {
            info(format!(
                "Ingress {id}: has {PREFIX}{k} without {PREFIX}canary: \"true\": ingress-nginx treats it as a main \
                 Ingress (\"configured but not enabled\"), and so does the import"
            ));
        }
    }
    (enabled, c, notes)
}

/// Annotations of a canary Ingress that change how ingress-nginx balances
/// its upstream (`createUpstreams`, `mergeAlternativeBackend`); its other
/// annotations are ignored by ingress-nginx.
fn canary_annotation_matters(k: &str) -> bool {
    k == "load-balance"
        || k.starts_with("upstream-hash-by")
        || k.starts_with("affinity")
        || k.starts_with("session-cookie")
}

/// A path as weir's `path_prefix`, with a note when weir matches other
/// requests than nginx does; `Err` when no request can match it.
fn weir_path(path: &str, path_type: &PathType) -> Result<(String, Option<String>), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "path {path} does not start with '/': no request matches it in ingress-nginx either; not imported"
        ));
    }
    Ok(match path_type {
        PathType::Exact => {
            (path.to_string(), Some(format!("path {path} is Exact; weir's path_prefix also matches {path}more")))
        }
        PathType::Prefix if path == "/" => ("/".to_string(), None),
        // nginx: `location /api/` (and `= /api/`), and it answers /api with
        // a redirect to /api/.
        PathType::Prefix if path.ends_with('/') => {
            let short = &path[..path.len() - 1];
            let note = format!(
                "path {path} is a Prefix ending in '/': nginx answers {short} with a redirect (301) to {path}, weir \
                 routes {short} as a path of its own"
            );
            (path.to_string(), Some(note))
        }
        // nginx: `location /api/` and `location = /api`.
        PathType::Prefix => {
            let note = format!(
                "path {path} is a Prefix ({path} and {path}/...); weir's path_prefix {path} also matches {path}x"
            );
            (path.to_string(), Some(note))
        }
        // nginx: `location /api`, a string prefix, as weir's.
        PathType::Other(_) => (path.to_string(), None),
    })
}

/// The values of a header pattern that is an anchored list of literals:
/// `^beta$`, `^(beta|gamma)$`, `^(?:beta|gamma)$`. An alternation must be
/// inside the group: `^a|b$` is `(^a)|(b$)` (a prefix or a suffix).
fn pattern_values(p: &str) -> Option<Vec<String>> {
    let inner = p.strip_prefix('^')?.strip_suffix('$')?;
    let (body, grouped) = match inner.strip_prefix("(?:").or_else(|| inner.strip_prefix('(')) {
        Some(rest) => (rest.strip_suffix(')')?, true),
        None => (inner, false),
    };
    let mut values = vec![String::new()];
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        let value = values.last_mut()?;
        match c {
            // PCRE: a backslash before punctuation is that character.
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => value.push(e),
                _ => return None,
            },
            '|' if grouped => values.push(String::new()),
            // What IsValidRegex lets through and PCRE reads as itself.
            c if c.is_ascii_alphanumeric() || "-_~/:&=".contains(c) => value.push(c),
            _ => return None,
        }
    }
    if values.iter().any(String::is_empty) {
        return None;
    }
    Some(values)
}

/// Weight W of total T in basis points, as ingress-nginx draws it
/// (`math.random(T) <= W`, T = 100 unless above 100), with a note when
/// 0.01 % steps cannot hold it exactly.
fn weight_bp(weight: i64, total: i64) -> (u32, Option<String>) {
    let total = i128::from(total.max(100));
    let w = i128::from(weight).clamp(0, total);
    let exact = w * 10_000 % total == 0;
    // At most 10 000: fits.
    let bp = u32::try_from((w * 10_000 + total / 2) / total).unwrap_or(10_000);
    let note =
        (!exact).then(|| format!("canary-weight {weight} of {total} is {} % in weir (0.01 % steps)", percent(bp)));
    (bp, note)
}

/// Basis points as a percentage with up to two decimals.
fn percent(bp: u32) -> String {
    match bp % 100 {
        0 => format!("{}", bp / 100),
        f if f % 10 == 0 => format!("{}.{}", bp / 100, f / 10),
        f => format!("{}.{f:02}", bp / 100),
    }
}

/// A canary's rules in weir's terms, with what differs (notes name the
/// Ingress `id`).
fn policy(c: &Canary, id: &str) -> (Policy, Vec<Note>) {
    let mut notes = Vec::new();
    let mut note = |lost: bool, text: String| notes.push(Note { lost, text: clean(&text) });
    if let Some(total) = c.total.filter(|t| *t < 100) {
        note(
            false,
            format!("Ingress {id}: canary-weight-total {total} is ignored by ingress-nginx (it uses 100 below 101)"),
        );
    }
    let (weight, inexact) = weight_bp(c.weight, c.total.unwrap_or(100));
    if let Some(n) = inexact {
        note(true, format!("Ingress {id}: {n}"));
    }
    // nginx reads the header as the variable $http_NAME, '-' and '_' alike:
    // `x_canary` is the request header x-canary. nginx ignores request
    // headers with names of other characters than letters, digits and '-'
    // (ignore-invalid-headers, underscores off): such a rule never matches.
    let header = match &c.header {
        None => None,
        Some(h) => {
            let mapped = h.replace('_', "-");
            if !mapped.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                note(
                    false,
                    format!(
                        "Ingress {id}: canary-by-header \"{h}\" never matches in ingress-nginx (nginx ignores request \
                         headers named so): not imported"
                    ),
                );
                None
            } else {
                if mapped != *h {
                    note(
                        false,
                        format!("Ingress {id}: canary-by-header \"{h}\" is the request header {mapped} in nginx ($http_ variables)"),
                    );
                }
                Some(mapped)
            }
        }
    };
    let (mut force, mut cohort) = (None, None);
    match header {
        None => {
            if c.header.is_none() && (c.value.is_some() || c.pattern.is_some()) {
                note(
                    false,
                    format!(
                        "Ingress {id}: canary-by-header-value/-pattern without canary-by-header has no effect (in \
                         ingress-nginx too)"
                    ),
                );
            }
        }
        Some(h) => {
            if let Some(v) = &c.value {
                cohort = Some((Source::Header, h, vec![v.clone()]));
                if c.pattern.is_some() {
                    note(
                        false,
                        format!(
                            "Ingress {id}: canary-by-header-pattern is ignored when canary-by-header-value is set (in \
                             ingress-nginx too)"
                        ),
                    );
                }
            } else if let Some(p) = &c.pattern {
                match pattern_values(p) {
                    Some(values) => cohort = Some((Source::Header, h, values)),
                    None => note(
                        true,
                        format!(
                            "Ingress {id}: canary-by-header-pattern \"{p}\" is a regular expression; weir matches listed \
                             values only (a pattern such as ^(a|b)$ is imported): requests it would send to the canary \
                             follow the other rules instead"
                        ),
                    ),
                }
            } else {
                force = Some((Source::Header, h));
            }
        }
    }
    // weir's cookie names (its config parser): no spaces, controls or =;,"\.
    let cookie = c.cookie.as_ref().filter(|k| {
        let ok = k.bytes().all(|b| b > b' ' && b < 0x7f && !b"=;,\"\\".contains(&b));
        if !ok {
            note(true, format!("Ingress {id}: canary-by-cookie \"{k}\" is not a cookie name weir reads: not imported"));
        }
        ok
    });
    if let Some(k) = cookie {
        if force.is_none() {
            force = Some((Source::Cookie, k.clone()));
            if cohort.is_some() {
                note(
                    true,
                    format!(
                        "Ingress {id}: a request with both the canary-by-header value and the cookie {k}=never goes to \
                         the main Service in weir (the opt-out wins), to the canary in ingress-nginx"
                    ),
                );
            }
        } else {
            cohort = Some((Source::Cookie, k.clone(), vec!["always".to_string()]));
            if weight > 0 {
                note(
                    true,
                    format!(
                        "Ingress {id}: the cookie {k}=never is not imported (the header is weir's one force key): such \
                         requests follow the weight"
                    ),
                );
            }
        }
    }
    if force.is_some() {
        note(
            true,
            format!(
                "Ingress {id}: weir reads the force values always/never in any case; ingress-nginx only in lower case"
            ),
        );
    }
    if weight > 0 && weight < 10_000 {
        note(
            false,
            format!(
                "Ingress {id}: the weight is drawn per request, as in ingress-nginx; add sticky = {{ cookie = \"...\" }} \
                 or {{ header = \"...\" }} to keep each user on one side"
            ),
        );
    }
    (Policy { weight, force, cohort }, notes)
}

/// A name weir takes (1-64 letters, digits, '-', '_', '.'), from a
/// Kubernetes name (up to 56, leaving room for `-default`).
fn weir_name(base: &str, fallback: &str) -> String {
    let name: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).take(56).collect();
    if name.is_empty() {
        fallback.to_string()
    } else {
        name
    }
}

/// `base`, or `base-2`, `base-3`… (cut to weir's 64 characters), the first
/// that is not `taken`.
fn unique(base: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut name = base.chars().take(64).collect::<String>();
    let mut n = 2;
    while taken(&name) {
        let suffix = format!("-{n}");
        name = base.chars().take(64 - suffix.len()).collect::<String>() + &suffix;
        n += 1;
    }
    name
}

/// `text` on one line without control characters (escaped as `\u{..}`):
/// notes go to a terminal and into TOML comments.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// A TOML basic string (JSON's escapes are a subset of TOML's; TOML wants
/// DEL escaped too).
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string().replace('\u{7f}', "\\u007f")
}

impl<'a> Importer<'a> {
    fn note(&mut self, lost: bool, text: String) {
        self.notes.push(Note { lost, text: clean(&text) });
    }

    fn info(&mut self, text: String) {
        self.note(false, text);
    }

    fn lost(&mut self, text: String) {
        self.note(true, text);
    }

    /// `true` the first time `what` is reported.
    fn first_report(&mut self, what: String) -> bool {
        self.reported.insert(what)
    }

    /// The Ingresses the controller serves, with their canary rules, in its
    /// order.
    fn select(&mut self) {
        let input = self.input;
        for ing in &input.ingresses {
            let id = ing.id();
            match class_of(ing) {
                Some(class) if class != self.opts.class => {
                    self.info(format!("Ingress {id}: skipped: its class is \"{class}\", not \"{}\"", self.opts.class));
                    continue;
                }
                Some(_) => {}
                None => self.info(format!(
                    "Ingress {id}: names no ingress class: imported, but ingress-nginx serves it only when started \
                     with --watch-ingress-without-class"
                )),
            }
            let (enabled, canary, notes) = read_canary(ing, &id);
            self.notes.extend(notes);
            self.ings.push(Ing { ing, id, canary: enabled.then_some(canary) });
        }
        // sortIngressSlice: creation time (none: Go's zero time, first),
        // then namespace/name, the greater first.
        self.ings.sort_by(|a, b| a.ing.created.cmp(&b.ing.created).then_with(|| b.id.cmp(&a.id)));
        for i in 0..self.ings.len() {
            let g = &self.ings[i];
            let (id, ing) = (g.id.clone(), g.ing);
            if g.canary.is_some() {
                self.canary_ingress_notes(ing, &id);
            } else {
                self.main_ingress_notes(ing, &id);
            }
        }
    }

    /// What a main Ingress has that the import does not carry over.
    fn main_ingress_notes(&mut self, ing: &Ingress, id: &str) {
        let unread: Vec<&str> = ing
            .annotations
            .keys()
            .filter_map(|k| k.strip_prefix(PREFIX))
            .filter(|k| *k != "backend-protocol" && *k != "canary" && !CANARY_KEYS.contains(k))
            .collect();
        if !unread.is_empty() {
            self.lost(format!("Ingress {id}: not imported: {}", unread.join(", ")));
        }
        match annotation(ing, "backend-protocol").map(|p| p.to_ascii_uppercase()).as_deref() {
            None | Some("HTTP" | "GRPC") => {}
            Some("HTTPS" | "GRPCS") => self.lost(format!(
                "Ingress {id}: weir verifies the upstream's TLS certificate, ingress-nginx does not by default: set \
                 the backends' tls = {{ ca = \"...\" }} for a private CA"
            )),
            Some(other) => self.lost(format!("Ingress {id}: backend-protocol {other} is not imported (HTTP/1.1)")),
        }
        for tls in &ing.spec.tls {
            self.lost(format!(
                "Ingress {id}: TLS for {} (Secret {}) is not imported: mount the Secret and set [listen.tls] cert and key",
                if tls.hosts.is_empty() { "every host".to_string() } else { tls.hosts.join(", ") },
                tls.secret_name.as_deref().unwrap_or("none")
            ));
        }
    }

    /// What a canary Ingress has besides its canary rules.
    fn canary_ingress_notes(&mut self, ing: &Ingress, id: &str) {
        let extra: Vec<&str> = ing
            .annotations
            .keys()
            .filter_map(|k| k.strip_prefix(PREFIX))
            .filter(|k| *k != "canary" && !CANARY_KEYS.contains(k))
            .collect();
        let (matters, ignored): (Vec<&str>, Vec<&str>) = extra.into_iter().partition(|k| canary_annotation_matters(k));
        if !matters.is_empty() {
            self.lost(format!(
                "Ingress {id}: not imported: {} (they set how ingress-nginx balances the canary)",
                matters.join(", ")
            ));
        }
        if !ignored.is_empty() {
            self.info(format!(
                "Ingress {id}: ingress-nginx ignores a canary Ingress's {}; so does the import",
                ignored.join(", ")
            ));
        }
        if !ing.spec.tls.is_empty() {
            self.info(format!("Ingress {id}: ingress-nginx ignores a canary Ingress's TLS; so does the import"));
        }
    }

    /// `createUpstreams`: which Ingress sets up each Service port's
    /// upstream.
    fn create_upstreams(&mut self) {
        for (i, g) in self.ings.iter().enumerate() {
            if let Some(key) = default_backend(g.ing).and_then(|b| UpstreamKey::of(&g.ing.namespace, b).ok()) {
                // Made anew for every defaultBackend that names it.
                self.upstreams.insert(key, Upstream { owner: i, alternatives: Vec::new(), removed_by: None });
            }
            for rule in &g.ing.spec.rules {
                let Some(http) = &rule.http else { continue };
                for p in &http.paths {
                    if let Ok(key) = UpstreamKey::of(&g.ing.namespace, &p.backend) {
                        self.upstreams.entry(key).or_insert(Upstream {
                            owner: i,
                            alternatives: Vec::new(),
                            removed_by: None,
                        });
                    }
                }
            }
        }
    }

    /// Whether the upstream is a canary's (`NoServer`).
    fn no_server(&self, key: &UpstreamKey) -> bool {
        self.upstreams.get(key).is_some_and(|u| self.ings[u.owner].canary.is_some())
    }

    fn server_index(&self, host: &Option<String>) -> Option<usize> {
        self.servers.iter().position(|s| s.host == *host)
    }

    /// `createServers`: a server per host of the main Ingresses, its `/` the
    /// first such Ingress's defaultBackend; the catch-all's `/` the first
    /// rule-less Ingress's.
    fn create_servers(&mut self) {
        self.servers.push(Server {
            host: None,
            locations: vec![Location {
                path: "/".to_string(),
                path_type: PathType::Prefix,
                backend: None,
                default: true,
                via_default_backend: false,
                ingress: None,
            }],
        });
        for i in 0..self.ings.len() {
            let g = &self.ings[i];
            if g.canary.is_some() {
                if let Some(b) = default_backend(g.ing) {
                    if let Err(why) = UpstreamKey::of(&g.ing.namespace, b) {
                        let id = g.id.clone();
                        self.info(format!("Ingress {id}: its defaultBackend is {why}: ingress-nginx ignores it too"));
                    }
                }
                continue;
            }
            let (ing, id) = (g.ing, g.id.clone());
            let own = match default_backend(ing).map(|b| UpstreamKey::of(&ing.namespace, b)) {
                None => None,
                Some(Ok(key)) => Some(key),
                Some(Err(why)) => {
                    self.info(format!(
                        "Ingress {id}: its defaultBackend is {why}: ingress-nginx uses its own default backend (404), \
                         and so does the import"
                    ));
                    None
                }
            };
            if let Some(key) = &own {
                if ing.spec.rules.is_empty() {
                    let root = &mut self.servers[0].locations[0];
                    if root.default {
                        root.backend = Some(key.clone());
                        root.default = false;
                        root.via_default_backend = true;
                        root.ingress = Some(i);
                    } else {
                        let first = root.ingress.map(|j| self.ings[j].id.clone()).unwrap_or_default();
                        self.info(format!(
                            "Ingress {id}: its defaultBackend is not used: ingress-nginx takes the first rule-less \
                             Ingress's for every other host ({first}), and so does the import"
                        ));
                    }
                }
            }
            for rule in &ing.spec.rules {
                let host = host_of(rule.host.as_deref());
                if self.server_index(&host).is_some() {
                    if own.is_some() {
                        self.info(format!(
                            "Ingress {id}: its defaultBackend does not serve host {}: ingress-nginx uses the \
                             defaultBackend of the first Ingress with that host, or none, and so does the import",
                            host_text(&host)
                        ));
                    }
                    continue;
                }
                self.servers.push(Server {
                    host,
                    locations: vec![Location {
                        path: "/".to_string(),
                        path_type: PathType::Prefix,
                        backend: own.clone(),
                        default: true,
                        via_default_backend: own.is_some(),
                        ingress: Some(i),
                    }],
                });
            }
        }
    }

    /// `getBackendServers`: a location per host, path and pathType, the
    /// first Ingress's (a canary Ingress's too, when its Service's upstream
    /// is not a canary).
    fn add_locations(&mut self) {
        for i in 0..self.ings.len() {
            let (ing, id, is_canary) = (self.ings[i].ing, self.ings[i].id.clone(), self.ings[i].canary.is_some());
            for rule in &ing.spec.rules {
                let host = host_of(rule.host.as_deref());
                // A canary Ingress's host without a main Ingress: the
                // catch-all server.
                let si = self.server_index(&host).unwrap_or(0);
                let Some(http) = &rule.http else { continue };
                for p in &http.paths {
                    let path = p.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_string());
                    let path_type = PathType::of(p.path_type.as_deref());
                    let at = format!("host {} path {path}", host_text(&host));
                    let key = match UpstreamKey::of(&ing.namespace, &p.backend) {
                        Ok(key) => key,
                        Err(why) if p.backend.is_resource() => {
                            self.info(format!("Ingress {id}: {at} has {why}: ingress-nginx skips it too"));
                            continue;
                        }
                        Err(why) => {
                            self.lost(format!("Ingress {id}: {at} has {why}: not imported"));
                            continue;
                        }
                    };
                    if self.no_server(&key) {
                        if !is_canary {
                            let owner = self.upstreams.get(&key).map(|u| self.ings[u.owner].id.clone());
                            self.info(format!(
                                "Ingress {id}: {at} is not imported: its {key} is canary Ingress {}'s canary, which \
                                 ingress-nginx routes no path to",
                                owner.unwrap_or_default()
                            ));
                        }
                        continue;
                    }
                    // The first location with this path: the same type is this
                    // location (taken, unless it is the server's own `/`);
                    // another type, another location.
                    let same = self.servers[si].locations.iter().position(|l| l.path == path);
                    let same = same.filter(|&li| self.servers[si].locations[li].path_type == path_type);
                    if is_canary {
                        let owner = self.upstreams.get(&key).map(|u| self.ings[u.owner].id.clone()).unwrap_or_default();
                        self.info(format!(
                            "Ingress {id}: its {key} is set up by main Ingress {owner} (the first to name it): \
                             ingress-nginx applies none of this canary's rules to it, and routes host {} path {path} \
                             to it when no other Ingress has that path; so does the import",
                            host_text(&self.servers[si].host),
                        ));
                    }
                    match same {
                        None => self.servers[si].locations.push(Location {
                            path,
                            path_type,
                            backend: Some(key),
                            default: false,
                            via_default_backend: false,
                            ingress: Some(i),
                        }),
                        Some(li) if self.servers[si].locations[li].default => {
                            let loc = &mut self.servers[si].locations[li];
                            loc.backend = Some(key);
                            loc.default = false;
                            loc.via_default_backend = false;
                            loc.ingress = Some(i);
                        }
                        Some(li) => {
                            let loc = &self.servers[si].locations[li];
                            let by = match loc.ingress {
                                Some(j) if j == i => "this Ingress".to_string(),
                                Some(j) => format!("Ingress {}", self.ings[j].id),
                                None => "the catch-all".to_string(),
                            };
                            let why = if loc.via_default_backend {
                                " (a rule-less Ingress's defaultBackend takes / of every host without a server)"
                            } else {
                                ""
                            };
                            self.info(format!(
                                "Ingress {id}: host {} path {path} ({}) is already routed by {by}{why}: ingress-nginx \
                                 keeps the first, ordering Ingresses by creationTimestamp, then by namespace/name from \
                                 the last; so does the import",
                                host_text(&self.servers[si].host),
                                path_type.name(),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// `mergeAlternativeBackends`: each canary Ingress's Services join the
    /// upstreams of the main locations they match.
    fn merge_canaries(&mut self) {
        let canaries: Vec<usize> = (0..self.ings.len()).filter(|&i| self.ings[i].canary.is_some()).collect();
        if canaries.len() == self.ings.len() {
            for &c in &canaries {
                let id = self.ings[c].id.clone();
                self.info(format!(
                    "Ingress {id}: there is no main Ingress: ingress-nginx merges no canary, nor does the import"
                ));
            }
            return;
        }
        for &c in &canaries {
            let (ing, id) = (self.ings[c].ing, self.ings[c].id.clone());
            // A canary defaultBackend joins every location of the catch-all
            // server (host-less paths and its /).
            if let Some(alt) = default_backend(ing).and_then(|b| UpstreamKey::of(&ing.namespace, b).ok()) {
                match self.merge(c, &alt, 0, &|_| true) {
                    Merge::Merged => self.info(format!(
                        "Ingress {id}: its defaultBackend {alt} is the canary of the host-less paths (ingress-nginx \
                         merges it into every location of its catch-all server); so does the import"
                    )),
                    Merge::Gone(_) | Merge::IsPrimary => self.info(format!(
                        "Ingress {id}: its defaultBackend {alt} is the canary of no path in ingress-nginx, nor in the \
                         import"
                    )),
                    Merge::Removed => self.info(format!(
                        "Ingress {id}: its defaultBackend {alt} matches no host-less path: ingress-nginx ignores it and \
                         stops using {alt} as a canary anywhere; so does the import"
                    )),
                }
            }
            for rule in &ing.spec.rules {
                let host = host_of(rule.host.as_deref());
                let Some(http) = &rule.http else { continue };
                for p in &http.paths {
                    let Ok(alt) = UpstreamKey::of(&ing.namespace, &p.backend) else { continue };
                    let path = p.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_string());
                    let path_type = PathType::of(p.path_type.as_deref());
                    let at = format!("host {} path {path} ({})", host_text(&host), path_type.name());
                    let Some(si) = self.server_index(&host) else {
                        self.info(format!(
                            "Ingress {id}: {at}: no main Ingress has that host: ingress-nginx ignores this canary \
                             path, and so does the import"
                        ));
                        continue;
                    };
                    match self.merge(c, &alt, si, &|l| l.path == path && l.path_type == path_type) {
                        Merge::Merged => {}
                        Merge::Gone(by) => {
                            let by = by.map(|b| self.ings[b].id.clone()).unwrap_or_default();
                            self.info(format!(
                                "Ingress {id}: {at}: ingress-nginx already removed its {alt} (canary Ingress {by} \
                                 names it where no main path matches): not merged, in the import either"
                            ));
                        }
                        Merge::IsPrimary => self.info(format!(
                            "Ingress {id}: {at}: its {alt} is the main Service of a path of that host: ingress-nginx \
                             merges no canary here, nor does the import"
                        )),
                        Merge::Removed => {
                            let near = self.servers[si].locations.iter().find(|l| {
                                l.backend.as_ref().is_some_and(|k| !self.no_server(k))
                                    && (l.path == path || l.path.trim_end_matches('/') == path.trim_end_matches('/'))
                            });
                            let near = match near {
                                Some(l) => format!(
                                    " (the main path {} ({}) is not it: ingress-nginx merges a canary path only into \
                                     a location of the same path and pathType, as written)",
                                    l.path,
                                    l.path_type.name()
                                ),
                                None => String::new(),
                            };
                            self.info(format!(
                                "Ingress {id}: {at}: no main path of that host is the same{near}: ingress-nginx \
                                 ignores this canary path and stops using {alt} as a canary anywhere; so does the \
                                 import"
                            ));
                        }
                    }
                }
            }
        }
        let mut ignored = Vec::new();
        // A canary upstream has the rules of the Ingress that set it up.
        for (c, alt) in &self.merged {
            let Some(owner) = self.upstreams.get(alt).map(|u| u.owner).filter(|o| o != c) else { continue };
            if self.ings[owner].canary.is_some() {
                ignored.push(format!(
                    "Ingress {}: its canary rules are not in effect: its {alt} has those of Ingress {}, which set up \
                     that upstream first (ingress-nginx orders Ingresses by creationTimestamp); so does the import",
                    self.ings[*c].id, self.ings[owner].id
                ));
            }
        }
        for (key, up) in &self.upstreams {
            if let Some((first, rest)) = up.alternatives.split_first() {
                for later in rest {
                    ignored.push(format!(
                        "Ingress {}: its {} is not the canary of {key}: ingress-nginx uses the first canary merged into \
                         a Service (Ingress {}'s {}); so does the import",
                        self.ings[later.by].id, later.key, self.ings[first.by].id, first.key
                    ));
                }
            }
        }
        for text in ignored {
            self.info(text);
        }
    }

    /// Merges the canary upstream `alt` (of canary Ingress `c`) into the
    /// upstreams of server `si`'s locations that `matches` takes, as
    /// `mergeAlternativeBackends` does for one path.
    fn merge(&mut self, c: usize, alt: &UpstreamKey, si: usize, matches: &dyn Fn(&Location) -> bool) -> Merge {
        match self.upstreams.get(alt) {
            None => return Merge::Gone(None),
            Some(u) if u.removed_by.is_some() => return Merge::Gone(u.removed_by),
            Some(_) => {}
        }
        let host = self.servers[si].host.clone();
        let mut targets = Vec::new();
        let mut is_primary = false;
        for loc in &self.servers[si].locations {
            // The controller's own 404 takes no canary; a removed upstream
            // is not found.
            let Some(pri) = &loc.backend else { continue };
            if self.upstreams.get(pri).is_none_or(|u| u.removed_by.is_some()) {
                continue;
            }
            if pri == alt {
                is_primary = true;
                break;
            }
            if !self.no_server(pri) && matches(loc) {
                targets.push((pri.clone(), loc.path.clone(), loc.path_type.clone()));
            }
        }
        let merged = !targets.is_empty();
        if merged {
            self.merged.insert((c, alt.clone()));
        }
        for (pri, path, path_type) in targets {
            let Some(up) = self.upstreams.get_mut(&pri) else { continue };
            let site = (host.clone(), path, path_type);
            match up.alternatives.iter_mut().find(|a| a.key == *alt) {
                Some(a) => a.sites.push(site),
                None => up.alternatives.push(Alternative { key: alt.clone(), by: c, sites: vec![site] }),
            }
        }
        if is_primary {
            Merge::IsPrimary
        } else if merged {
            Merge::Merged
        } else {
            if let Some(u) = self.upstreams.get_mut(alt) {
                u.removed_by = Some(c);
            }
            Merge::Removed
        }
    }

    /// A weir route per location with a Service, its canary the first one
    /// merged into that Service's upstream.
    fn emit_routes(&mut self) {
        let mut without_root = Vec::new();
        for si in 0..self.servers.len() {
            let host = self.servers[si].host.clone();
            let first_id = self.servers[si].locations.first().and_then(|l| l.ingress).map(|i| self.ings[i].id.clone());
            if let Some(h) = &host {
                let why = if h.starts_with('*') {
                    Some("a wildcard host (weir matches exact hosts)")
                } else if h.contains(['/', ' ', ':']) {
                    Some("not a host name weir matches")
                } else {
                    None
                };
                if let Some(why) = why {
                    self.lost(format!("Ingress {}: host {h} is not imported: {why}", first_id.unwrap_or_default()));
                    continue;
                }
            }
            let mut has_root = false;
            for li in 0..self.servers[si].locations.len() {
                let loc = &self.servers[si].locations[li];
                let (Some(key), Some(gi)) = (loc.backend.clone(), loc.ingress) else { continue };
                let (path, path_type, via_default) = (loc.path.clone(), loc.path_type.clone(), loc.via_default_backend);
                let (ing, id) = (self.ings[gi].ing, self.ings[gi].id.clone());
                let at = format!("host {} path {path} ({})", host_text(&host), path_type.name());
                let (prefix, note) = match weir_path(&path, &path_type) {
                    Ok(p) => p,
                    Err(why) => {
                        self.info(format!("Ingress {id}: host {} {why}", host_text(&host)));
                        continue;
                    }
                };
                if let Some(other) = self.routes.iter().find(|r| r.host == host && r.path == prefix) {
                    self.lost(format!(
                        "Ingress {id}: {at} is not imported: weir has one route per host and path prefix, and route {} \
                         has {prefix}",
                        other.name
                    ));
                    continue;
                }
                if let Some(by) = self.upstreams.get(&key).and_then(|u| u.removed_by) {
                    self.lost(format!(
                        "Ingress {id}: {at}: ingress-nginx removed its {key} (canary Ingress {} names it where no \
                         main path matches) and fails such requests; weir routes them to it",
                        self.ings[by].id
                    ));
                }
                if let Some(note) = note {
                    self.lost(format!("Ingress {id}: host {} {note}", host_text(&host)));
                }
                let Some(stable) = self.backend(&key, ing, ing) else { continue };
                let canary = self.canary_for(&key, &host, &path, &path_type, ing, &id);
                let base = weir_name(&ing.name, "ingress");
                let (name, mut about) = if via_default {
                    (self.route_name(&format!("{base}-default")), format!("Ingress {id} defaultBackend"))
                } else {
                    (self.route_name(&base), format!("Ingress {id}"))
                };
                let canary = canary.map(|(backend, policy, by)| {
                    about = format!("{about}, canary Ingress {by}");
                    (backend, policy)
                });
                has_root |= prefix == "/";
                self.routes.push(RouteOut { name, host: host.clone(), path: prefix, stable, canary, about });
            }
            if let (Some(h), false) = (&host, has_root) {
                without_root.push((h.clone(), first_id));
            }
        }
        // weir sends a request for a known host that none of its routes
        // takes to the host-less routes; nginx to the host's own `/`.
        if self.routes.iter().any(|r| r.host.is_none()) {
            for (h, id) in without_root {
                self.lost(format!(
                    "Ingress {}: host {h} has no route for /: weir sends its other paths to the host-less routes, \
                     ingress-nginx to its default backend (404)",
                    id.unwrap_or_default()
                ));
            }
        }
    }

    /// The canary of the routes to `key`: the first canary merged into its
    /// upstream, with the rules of the Ingress that set that canary up;
    /// (backend, policy, canary Ingress).
    fn canary_for(
        &mut self,
        key: &UpstreamKey,
        host: &Option<String>,
        path: &str,
        path_type: &PathType,
        protocol_of: &Ingress,
        route_id: &str,
    ) -> Option<(String, Policy, String)> {
        let first = self.upstreams.get(key)?.alternatives.first()?;
        let here = first.sites.iter().any(|(h, p, t)| h == host && p == path && t == path_type);
        let (alt, by) = (first.key.clone(), first.by);
        let by_id = self.ings[by].id.clone();
        let alt_up = self.upstreams.get(&alt)?;
        let (owner, removed_by) = (alt_up.owner, alt_up.removed_by);
        let owner_id = self.ings[owner].id.clone();
        if let Some(r) = removed_by {
            if self.first_report(format!("removed {key}")) {
                let r = self.ings[r].id.clone();
                self.info(format!(
                    "Ingress {by_id}: its {alt} is not the canary of {key}: ingress-nginx merged it, then removed it \
                     (canary Ingress {r} names it where no main path matches), which leaves {key} without a canary; \
                     so does the import"
                ));
            }
            return None;
        }
        let Some(rules) = self.ings[owner].canary.clone() else {
            if self.first_report(format!("main-owned {alt}")) {
                self.info(format!(
                    "Ingress {by_id}: its {alt} is set up by main Ingress {owner_id} (the first to name it): \
                     ingress-nginx gives it no canary rules, so no request goes to it as {key}'s canary; not imported"
                ));
            }
            return None;
        };
        let (policy, notes) = policy(&rules, &owner_id);
        if self.first_report(format!("policy {owner_id}")) {
            self.notes.extend(notes);
        }
        if !here {
            self.info(format!(
                "Ingress {route_id}: host {} path {path} gets the canary of Ingress {by_id} ({alt}): ingress-nginx \
                 gives a canary to the main {key} wherever it is routed, and so does the import",
                host_text(host)
            ));
        }
        let by_ing = self.ings[by].ing;
        let canary = self.backend(&alt, by_ing, protocol_of)?;
        Some((canary, policy, by_id))
    }

    /// The backend for an upstream, made on first use; `by` names the
    /// Ingress in errors, `protocol_of` has the backend-protocol (the main
    /// Ingress's holds for its canary too).
    fn backend(&mut self, key: &UpstreamKey, by: &Ingress, protocol_of: &Ingress) -> Option<String> {
        if let Some(name) = self.backend_names.get(key) {
            return Some(name.clone());
        }
        let UpstreamKey { namespace, service, port } = key;
        let given = self
            .opts
            .services
            .get(&format!("{namespace}/{service}"))
            .or_else(|| self.opts.services.get(service))
            .cloned();
        let dns = |n: u16| format!("{service}.{namespace}.svc.{}:{n}", self.opts.cluster_domain);
        let addrs = match (given, port) {
            (Some(addrs), _) => addrs,
            (None, Port::Number(n)) => vec![dns(*n)],
            (None, Port::Name(name)) => match self.input.port_number(namespace, service, name) {
                Some(n) => vec![dns(n)],
                None => {
                    self.errors.push(clean(&format!(
                        "Ingress {}: service {service} port \"{name}\": no Service {namespace}/{service} with that port \
                         in the input; add the Service's manifest, or give its address with --service \
                         {service}=HOST:PORT",
                        by.id(),
                    )));
                    return None;
                }
            },
        };
        let (http2, tls) = match annotation(protocol_of, "backend-protocol").map(|p| p.to_ascii_uppercase()).as_deref()
        {
            Some("HTTPS") => (false, true),
            Some("GRPC") => (true, false),
            Some("GRPCS") => (true, true),
            // HTTP, and what main_ingress_notes reported.
            _ => (false, false),
        };
        let name = unique(&weir_name(service, "backend"), |n| self.backends.iter().any(|b| b.name == n));
        self.backends.push(BackendOut { name: name.clone(), addrs, http2, tls, about: key.to_string() });
        self.backend_names.insert(key.clone(), name.clone());
        Some(name)
    }

    fn route_name(&mut self, base: &str) -> String {
        let name = unique(base, |n| self.route_names.contains(n));
        self.route_names.insert(name.clone());
        name
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Imported from ingress-nginx Ingresses by `weir import ingress-nginx`.");
        let _ = writeln!(out, "#");
        let _ = writeln!(out, "# Not set by the import: the listener (default 127.0.0.1:8080; an edge");
        let _ = writeln!(out, "# proxy wants e.g. [listen] addr = \"0.0.0.0:8080\"), each backend's");
        let _ = writeln!(out, "# version label, and a [routes.rollout] to move the weight for you.");
        if !self.notes.is_empty() {
            let _ = writeln!(out, "#");
            for n in &self.notes {
                let tag = if n.lost { "DIFFERS" } else { "note" };
                let _ = writeln!(out, "# {tag}: {}", clean(&n.text));
            }
        }
        for b in &self.backends {
            let _ = writeln!(out, "\n# {}", clean(&b.about));
            let _ = writeln!(out, "[backends.{}]", b.name);
            let addrs: Vec<String> = b.addrs.iter().map(|a| quote(a)).collect();
            let _ = writeln!(out, "addrs = [{}]", addrs.join(", "));
            if b.http2 {
                let _ = writeln!(out, "http2 = true");
            }
            if b.tls {
                let _ = writeln!(out, "tls = true");
            }
        }
        for r in &self.routes {
            let _ = writeln!(out, "\n# {}", clean(&r.about));
            let _ = writeln!(out, "[[routes]]");
            let _ = writeln!(out, "name = {}", quote(&r.name));
            match &r.host {
                Some(h) => {
                    let _ = writeln!(out, "match = {{ host = {}, path_prefix = {} }}", quote(h), quote(&r.path));
                }
                None => {
                    let _ = writeln!(out, "match = {{ path_prefix = {} }}", quote(&r.path));
                }
            }
            let _ = writeln!(out, "stable = {}", quote(&r.stable));
            let Some((canary, p)) = &r.canary else { continue };
            let _ = writeln!(out, "canary = {}", quote(canary));
            let _ = writeln!(out, "weight = {}", percent(p.weight));
            if let Some((source, name)) = &p.force {
                let _ = writeln!(out, "force = {{ {} = {} }}", source.key(), quote(name));
            }
            if let Some((source, name, values)) = &p.cohort {
                let values: Vec<String> = values.iter().map(|v| quote(v)).collect();
                let _ = writeln!(
                    out,
                    "cohort = {{ {} = {}, values = [{}] }}",
                    source.key(),
                    quote(name),
                    values.join(", ")
                );
            }
        }
        out
    }
}

/// How merging one canary path (or defaultBackend) went.
enum Merge {
    /// Into at least one upstream.
    Merged,
    /// The canary's upstream was removed before (by this canary Ingress).
    Gone(Option<usize>),
    /// The canary's Service is a main location's of that server: nothing
    /// merged, nothing removed.
    IsPrimary,
    /// Nothing matched: the controller removes the canary's upstream.
    Removed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options { class: "nginx".into(), cluster_domain: "cluster.local".into(), services: BTreeMap::new() }
    }

    fn run(yaml: &str) -> Import {
        let mut m = Manifests::default();
        m.read("t.yaml", yaml, "default").unwrap();
        import(&m, &opts()).unwrap()
    }

    /// An Ingress of class nginx with one path; `meta` is added to its
    /// metadata (`creationTimestamp: ...`).
    fn ingress_at(name: &str, meta: &str, host: &str, path: &str, path_type: &str, service: &str, ann: &str) -> String {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  {meta}\n  \
             annotations: {{{ann}}}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: {host}\n    http:\n      \
             paths:\n      - path: {path}\n        pathType: {path_type}\n        backend: {{ service: {{ name: \
             {service}, port: {{ number: 80 }} }} }}\n"
        )
    }

    fn ingress(name: &str, host: &str, path: &str, service: &str, annotations: &str) -> String {
        ingress_at(name, "", host, path, "Prefix", service, annotations)
    }

    const CANARY: &str = "nginx.ingress.kubernetes.io/canary: \"true\"";

    fn pair(canary_annotations: &str) -> Import {
        let yaml = ingress("main", "a.example", "/", "prod", "")
            + &ingress("can", "a.example", "/", "next", &format!("{CANARY}, {canary_annotations}"));
        run(&yaml)
    }

    fn lost(im: &Import) -> Vec<&str> {
        im.notes.iter().filter(|n| n.lost).map(|n| n.text.as_str()).collect()
    }

    fn info(im: &Import) -> Vec<&str> {
        im.notes.iter().filter(|n| !n.lost).map(|n| n.text.as_str()).collect()
    }

    /// The `[[routes]]` block of the route with this name, from its name on.
    fn route<'t>(im: &'t Import, name: &str) -> &'t str {
        let start =
            im.text.find(&format!("name = \"{name}\"")).unwrap_or_else(|| panic!("no route {name}:\n{}", im.text));
        let rest = &im.text[start..];
        &rest[..rest.find("\n\n").map_or(rest.len(), |i| i + 1)]
    }

    #[test]
    fn weight_steps() {
        assert_eq!(weight_bp(10, 100), (1000, None));
        assert_eq!(weight_bp(5, 1000), (50, None));
        assert_eq!(weight_bp(200, 100), (10_000, None));
        assert_eq!(weight_bp(-3, 100), (0, None));
        assert_eq!(weight_bp(5, 10), (500, None)); // a total below 101 is 100
        let (bp, note) = weight_bp(1, 3000);
        assert_eq!(bp, 3);
        assert!(note.unwrap().contains("0.03 %"));
        assert_eq!(percent(3333), "33.33");
        assert_eq!(percent(50), "0.5");
        assert_eq!(percent(10_000), "100");
    }

    #[test]
    fn weights_near_the_limits_do_not_overflow() {
        assert_eq!(weight_bp(i64::MAX, i64::MAX), (10_000, None));
        assert_eq!(weight_bp(i64::MAX, 100), (10_000, None));
        assert_eq!(weight_bp(i64::MIN, i64::MIN), (0, None));
        let (bp, note) = weight_bp(1, i64::MAX);
        assert_eq!(bp, 0);
        assert!(note.unwrap().contains("is 0 % in weir"));
        let (bp, _) = weight_bp(i64::MAX / 2, i64::MAX);
        assert_eq!(bp, 5000);
    }

    #[test]
    fn literal_patterns_only() {
        assert_eq!(pattern_values("^(beta|gamma)$"), Some(vec!["beta".into(), "gamma".into()]));
        assert_eq!(pattern_values("^(?:a\\.b)$"), Some(vec!["a.b".into()]));
        assert_eq!(pattern_values("^beta$"), Some(vec!["beta".into()]));
        assert_eq!(pattern_values("^a\\|b$"), Some(vec!["a|b".into()]));
        // ^a|b$ is (^a)|(b$): any value starting with a or ending with b.
        for p in
            ["beta", "^beta", "beta$", "^bet.*$", "^(a|)$", "^[ab]$", "^a\\d$", "^a|b$", "^(a)|(b)$", "^a b$", "^a\\$"]
        {
            assert_eq!(pattern_values(p), None, "{p}");
        }
    }

    #[test]
    fn header_alone_is_the_force_key() {
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x-canary, nginx.ingress.kubernetes.io/canary-weight: \"20\"",
        );
        assert!(im.text.contains("force = { header = \"x-canary\" }"), "{}", im.text);
        assert!(im.text.contains("weight = 20\n"), "{}", im.text);
        // Only: weir reads Always, ingress-nginx does not.
        assert_eq!(lost(&im).len(), 1, "{:?}", im.notes);
        assert!(lost(&im)[0].contains("default/can: weir reads the force values always/never in any case"));
    }

    #[test]
    fn header_value_with_cookie_reports_the_precedence_it_cannot_keep() {
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x-group, nginx.ingress.kubernetes.io/canary-by-header-value: beta, \
             nginx.ingress.kubernetes.io/canary-by-cookie: canary",
        );
        assert!(im.text.contains("cohort = { header = \"x-group\", values = [\"beta\"] }"), "{}", im.text);
        assert!(im.text.contains("force = { cookie = \"canary\" }"), "{}", im.text);
        assert!(lost(&im).iter().any(|n| n.contains("canary=never")), "{:?}", im.notes);
    }

    #[test]
    fn header_and_cookie_and_weight() {
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x-canary, nginx.ingress.kubernetes.io/canary-by-cookie: c, \
             nginx.ingress.kubernetes.io/canary-weight: \"40\"",
        );
        assert!(im.text.contains("force = { header = \"x-canary\" }"), "{}", im.text);
        assert!(im.text.contains("cohort = { cookie = \"c\", values = [\"always\"] }"), "{}", im.text);
        assert!(lost(&im).iter().any(|n| n.contains("c=never")), "{:?}", im.notes);
        // At weight 0, never and the weight agree: only the letter case.
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x-canary, nginx.ingress.kubernetes.io/canary-by-cookie: c",
        );
        assert_eq!(lost(&im).len(), 1, "{:?}", im.notes);
    }

    #[test]
    fn annotations_are_read_as_ingress_nginx_reads_them() {
        // Atoi without trimming: " 20" is no number, the weight 0.
        let im = pair("nginx.ingress.kubernetes.io/canary-weight: \" 20\"");
        assert!(im.text.contains("weight = 0\n"), "{}", im.text);
        assert!(info(&im).iter().any(|n| n.contains("canary-weight \" 20\" is not a number")), "{:?}", im.notes);
        // Strings are trimmed; an underscore in a header name is '-' to nginx.
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: \" x_group \", \
             nginx.ingress.kubernetes.io/canary-by-header-value: \" beta \"",
        );
        assert!(im.text.contains("cohort = { header = \"x-group\", values = [\"beta\"] }"), "{}", im.text);
        assert!(info(&im).iter().any(|n| n.contains("is the request header x-group")), "{:?}", im.notes);
        // A header no request can carry: never matches, the cookie decides.
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x/group, nginx.ingress.kubernetes.io/canary-by-cookie: c",
        );
        assert!(im.text.contains("force = { cookie = \"c\" }"), "{}", im.text);
        assert!(!route(&im, "main").contains("x/group"), "{}", im.text);
        assert!(info(&im).iter().any(|n| n.contains("\"x/group\" never matches")), "{:?}", im.notes);
        // Characters IsValidRegex refuses: the pattern is unset.
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x, nginx.ingress.kubernetes.io/canary-by-header-pattern: \"^(a b)$\"",
        );
        assert!(im.text.contains("force = { header = \"x\" }"), "{}", im.text);
        assert!(info(&im).iter().any(|n| n.contains("canary-by-header-pattern \"^(a b)$\" has characters")));
        // "configured but not enabled": a main Ingress, in ingress-nginx too.
        let im = run(&ingress("m", "a.example", "/", "prod", "nginx.ingress.kubernetes.io/canary-weight: \"5\""));
        assert!(lost(&im).is_empty(), "{:?}", im.notes);
        assert!(info(&im).iter().any(|n| n.contains("configured but not enabled")), "{:?}", im.notes);
    }

    #[test]
    fn a_newline_in_an_annotation_stays_in_its_note() {
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x, \
             nginx.ingress.kubernetes.io/canary-by-header-value: \"beta\\n[backends.evil]\\naddrs = [\\\"1.2.3.4:80\\\"]\"",
        );
        let note = info(&im).into_iter().find(|n| n.contains("canary-by-header-value")).unwrap();
        assert!(note.contains("beta\\u{a}[backends.evil]"), "{note}");
        assert!(im.notes.iter().all(|n| !n.text.chars().any(char::is_control)), "{:?}", im.notes);
        assert!(!im.text.contains("\n[backends.evil]"), "{}", im.text);
        assert!(im.text.lines().filter(|l| l.contains("1.2.3.4")).all(|l| l.starts_with("# note: ")), "{}", im.text);
        // Unset, as in ingress-nginx: the header alone is the force key.
        assert!(im.text.contains("force = { header = \"x\" }"), "{}", im.text);
    }

    #[test]
    fn the_canary_belongs_to_the_main_service() {
        // Two hosts route to Service prod; the canary Ingress names only a.
        let yaml = ingress("a", "a.example", "/", "prod", "")
            + &ingress("b", "b.example", "/shop", "prod", "")
            + &ingress("c", "c.example", "/", "other", "")
            + &ingress(
                "a-canary",
                "a.example",
                "/",
                "next",
                &format!("{CANARY}, nginx.ingress.kubernetes.io/canary-weight: \"30\""),
            );
        let im = run(&yaml);
        for r in ["a", "b"] {
            assert!(route(&im, r).contains("canary = \"next\"\nweight = 30\n"), "{r}: {}", im.text);
        }
        assert!(!route(&im, "c").contains("canary"), "{}", im.text);
        let gains: Vec<&str> = info(&im).into_iter().filter(|n| n.contains("gets the canary")).collect();
        assert_eq!(gains.len(), 1, "{:?}", im.notes);
        assert!(gains[0]
            .starts_with("Ingress default/b: host b.example path /shop gets the canary of Ingress default/a-canary"));
    }

    #[test]
    fn a_main_path_to_a_canary_service_is_dropped() {
        let yaml = ingress_at(
            "can",
            "creationTimestamp: \"2024-01-01T00:00:00Z\"",
            "a.example",
            "/",
            "Prefix",
            "next",
            CANARY,
        ) + &ingress_at(
            "main",
            "creationTimestamp: \"2024-01-02T00:00:00Z\"",
            "a.example",
            "/",
            "Prefix",
            "prod",
            "",
        ) + &ingress_at(
            "late",
            "creationTimestamp: \"2024-01-03T00:00:00Z\"",
            "a.example",
            "/next",
            "Prefix",
            "next",
            "",
        );
        let im = run(&yaml);
        assert!(!im.text.contains("path_prefix = \"/next\""), "{}", im.text);
        assert!(
            info(&im).iter().any(|n| n.starts_with("Ingress default/late: host a.example path /next is not imported")),
            "{:?}",
            im.notes
        );
        assert!(route(&im, "main").contains("canary = \"next\""), "{}", im.text);
    }

    #[test]
    fn path_and_path_type_must_match_as_written() {
        let yaml = ingress("main", "a.example", "/api", "prod", "")
            + &ingress_at("exact", "", "a.example", "/v1", "Exact", "v1", "")
            + &ingress("slash", "a.example", "/api/", "next", CANARY)
            + &ingress("v1-canary", "a.example", "/v1", "v1-next", CANARY);
        let im = run(&yaml);
        assert!(!im.text.contains("canary ="), "{}", im.text);
        let near: Vec<&str> = info(&im).into_iter().filter(|n| n.contains("is not it")).collect();
        assert_eq!(near.len(), 2, "{:?}", im.notes);
        assert!(near.iter().any(|n| n.starts_with("Ingress default/slash: host a.example path /api/ (Prefix)")
            && n.contains("the main path /api (Prefix) is not it")));
        assert!(near.iter().any(|n| n.starts_with("Ingress default/v1-canary: host a.example path /v1 (Prefix)")
            && n.contains("the main path /v1 (Exact) is not it")));
        // ImplementationSpecific is Prefix to the controller: they match.
        let yaml = ingress("main", "a.example", "/api", "prod", "")
            + &ingress_at("can", "", "a.example", "/api", "ImplementationSpecific", "next", CANARY);
        let im = run(&yaml);
        assert!(route(&im, "main").contains("canary = \"next\""), "{}", im.text);
        // And a Prefix path matches whole segments in nginx, not /apix.
        assert!(lost(&im).iter().any(|n| n.contains("also matches /apix")), "{:?}", im.notes);
    }

    #[test]
    fn a_canary_path_that_matches_nothing_removes_its_service() {
        // The canary's /extra matches no main path: ingress-nginx deletes
        // its upstream, which / had already merged.
        let yaml = ingress("main", "a.example", "/", "prod", "")
            + "---\nkind: Ingress\nmetadata:\n  name: can\n  annotations: { nginx.ingress.kubernetes.io/canary: \"true\" }\n\
               spec:\n  rules:\n  - host: a.example\n    http:\n      paths:\n      - { path: /, pathType: Prefix, \
               backend: { service: { name: next, port: { number: 80 } } } }\n      - { path: /extra, pathType: Prefix, \
               backend: { service: { name: next, port: { number: 80 } } } }\n";
        let im = run(&yaml);
        assert!(!im.text.contains("canary ="), "{}", im.text);
        assert!(info(&im).iter().any(|n| n.contains("merged it, then removed it")), "{:?}", im.notes);
    }

    #[test]
    fn the_first_canary_merged_into_a_service_wins() {
        let yaml = ingress("main", "a.example", "/", "prod", "")
            + &ingress_at(
                "c1",
                "creationTimestamp: \"2024-01-02T00:00:00Z\"",
                "a.example",
                "/",
                "Prefix",
                "next1",
                &format!("{CANARY}, nginx.ingress.kubernetes.io/canary-by-header: x"),
            )
            + &ingress_at(
                "c2",
                "creationTimestamp: \"2024-01-01T00:00:00Z\"",
                "a.example",
                "/",
                "Prefix",
                "next2",
                &format!("{CANARY}, nginx.ingress.kubernetes.io/canary-weight: \"50\""),
            );
        let im = run(&yaml);
        // c2 is older: it merged first.
        assert!(route(&im, "main").contains("canary = \"next2\"\nweight = 50\n"), "{}", im.text);
        assert!(!im.text.contains("force ="), "{}", im.text);
        assert!(
            info(&im)
                .iter()
                .any(|n| n.starts_with("Ingress default/c1: its Service default/next1 port 80 is not the canary")
                    && n.contains("(Ingress default/c2's")),
            "{:?}",
            im.notes
        );
        // c1's rules are not in effect: no note on them.
        assert!(!im.notes.iter().any(|n| n.text.contains("default/c1: weir reads the force values")), "{:?}", im.notes);
    }

    #[test]
    fn a_shared_canary_service_has_the_rules_of_the_ingress_that_set_it_up() {
        // Both canary Ingresses name Service next; the older one set it up.
        let yaml = ingress("a", "a.example", "/", "prod-a", "")
            + &ingress("b", "b.example", "/", "prod-b", "")
            + &ingress_at(
                "ca",
                "creationTimestamp: \"2024-01-02T00:00:00Z\"",
                "a.example",
                "/",
                "Prefix",
                "next",
                &format!("{CANARY}, nginx.ingress.kubernetes.io/canary-by-header: x"),
            )
            + &ingress_at(
                "cb",
                "creationTimestamp: \"2024-01-01T00:00:00Z\"",
                "b.example",
                "/",
                "Prefix",
                "next",
                &format!("{CANARY}, nginx.ingress.kubernetes.io/canary-weight: \"40\""),
            );
        let im = run(&yaml);
        for r in ["a", "b"] {
            assert!(route(&im, r).contains("canary = \"next\"\nweight = 40\n"), "{r}: {}", im.text);
        }
        assert!(!im.text.contains("force ="), "{}", im.text);
        assert!(
            info(&im).iter().any(|n| n.starts_with("Ingress default/ca: its canary rules are not in effect")
                && n.contains("those of Ingress default/cb")),
            "{:?}",
            im.notes
        );
    }

    #[test]
    fn ingresses_in_the_controllers_order() {
        // The older Ingress keeps the path, whatever the file order.
        let yaml =
            ingress_at("new", "creationTimestamp: \"2024-02-01T00:00:00Z\"", "a.example", "/", "Prefix", "new", "")
                + &ingress_at(
                    "old",
                    "creationTimestamp: \"2024-01-01T00:00:00Z\"",
                    "a.example",
                    "/",
                    "Prefix",
                    "old",
                    "",
                );
        let im = run(&yaml);
        assert!(route(&im, "old").contains("stable = \"old\""), "{}", im.text);
        assert!(!im.text.contains("stable = \"new\""), "{}", im.text);
        assert!(info(&im).iter().any(|n| n.starts_with(
            "Ingress default/new: host a.example path / (Prefix) is already routed by Ingress default/old"
        )));
        // Equal (here: no) times: namespace/name, the greater first.
        let yaml = ingress("a", "a.example", "/", "sa", "") + &ingress("b", "a.example", "/", "sb", "");
        let im = run(&yaml);
        assert!(route(&im, "b").contains("stable = \"sb\""), "{}", im.text);
        assert!(!im.text.contains("stable = \"sa\""), "{}", im.text);
    }

    #[test]
    fn default_backends() {
        // With rules: / of its hosts. Without: every other host, before a
        // host-less rule for /.
        let yaml = "---\nkind: Ingress\nmetadata: { name: web }\nspec:\n  defaultBackend: { service: { name: fallback, port: { number: 80 } } }\n  \
                    rules:\n  - host: a.example\n    http:\n      paths:\n      - { path: /api, pathType: Prefix, backend: { service: { name: api, port: { number: 80 } } } }\n\
                    ---\nkind: Ingress\nmetadata: { name: all }\nspec:\n  defaultBackend: { service: { name: catchall, port: { number: 80 } } }\n"
            .to_string()
            + &ingress("hostless", "\"\"", "/", "hostless", "")
            + &ingress("b", "b.example", "/shop", "shop", "");
        let im = run(&yaml);
        let web = route(&im, "web-default");
        assert!(web.contains("match = { host = \"a.example\", path_prefix = \"/\" }\nstable = \"fallback\""), "{web}");
        let all = route(&im, "all-default");
        assert!(all.contains("match = { path_prefix = \"/\" }\nstable = \"catchall\""), "{all}");
        assert!(!im.text.contains("stable = \"hostless\""), "{}", im.text);
        assert!(info(&im).iter().any(|n| n
            .starts_with("Ingress default/hostless: host * path / (Prefix) is already routed by Ingress default/all")));
        // b.example has no /: weir would send /other there to the catch-all.
        assert!(
            lost(&im).iter().any(|n| n.starts_with("Ingress default/b: host b.example has no route for /")),
            "{:?}",
            im.notes
        );
        assert!(!lost(&im).iter().any(|n| n.contains("host a.example has no route")), "{:?}", im.notes);
    }

    #[test]
    fn a_canary_default_backend_joins_the_host_less_paths() {
        let yaml = ingress("main", "\"\"", "/", "prod", "")
            + "---\nkind: Ingress\nmetadata:\n  name: can\n  annotations: { nginx.ingress.kubernetes.io/canary: \"true\", \
               nginx.ingress.kubernetes.io/canary-weight: \"10\" }\nspec:\n  defaultBackend: { service: { name: next, \
               port: { number: 80 } } }\n";
        let im = run(&yaml);
        assert!(route(&im, "main").contains("canary = \"next\"\nweight = 10\n"), "{}", im.text);
        assert!(info(&im).iter().any(|n| n.starts_with("Ingress default/can: its defaultBackend")), "{:?}", im.notes);
    }

    #[test]
    fn what_cannot_be_mapped_is_reported() {
        let yaml = ingress("main", "a.example", "/api", "prod", "nginx.ingress.kubernetes.io/rewrite-target: /")
            + &ingress("can", "a.example", "/api", "next", &format!("{CANARY}, nginx.ingress.kubernetes.io/canary-by-header: x, nginx.ingress.kubernetes.io/canary-by-header-pattern: \"^bet\", nginx.ingress.kubernetes.io/affinity: cookie, nginx.ingress.kubernetes.io/proxy-body-size: 1m"))
            + &ingress("stray", "b.example", "/", "next-b", CANARY)
            + &ingress("wild", "\"*.example\"", "/", "prod", "")
            + &ingress_at("exact", "", "c.example", "/e", "Exact", "prod", "")
            + &ingress_at("relative", "", "d.example", "e", "ImplementationSpecific", "prod", "")
            + &ingress("tls", "f.example", "/", "prod", "nginx.ingress.kubernetes.io/backend-protocol: HTTPS");
        let im = run(&yaml);
        let lost = lost(&im);
        for want in [
            "default/main: not imported: rewrite-target",
            "default/can: canary-by-header-pattern \"^bet\"",
            "default/can: not imported: affinity",
            "default/wild: host *.example is not imported",
            "default/exact: host c.example path /e is Exact",
            "default/tls: weir verifies the upstream's TLS certificate",
        ] {
            assert!(lost.iter().any(|l| l.contains(want)), "{want} not in {lost:#?}");
        }
        let info = info(&im);
        for want in [
            "default/stray: host b.example path / (Prefix): no main Ingress has that host",
            "default/can: ingress-nginx ignores a canary Ingress's proxy-body-size",
            "default/relative: host d.example path e does not start with '/'",
        ] {
            assert!(info.iter().any(|l| l.contains(want)), "{want} not in {info:#?}");
        }
        assert!(route(&im, "main").contains("canary = \"next\""), "{}", im.text);
        // Every note is in the config's header too.
        for n in &im.notes {
            assert!(im.text.contains(&n.text), "{}", n.text);
        }
    }

    #[test]
    fn classes_names_and_failures() {
        // No class: imported, with a note; an empty name: a route name still.
        let yaml = "kind: Ingress\nmetadata: { name: \"\" }\nspec:\n  rules:\n  - http:\n      paths:\n      - path: /\n        \
                    backend: { service: { name: web, port: { number: 80 } } }\n";
        let im = run(yaml);
        assert!(im.text.contains("name = \"ingress\""), "{}", im.text);
        assert!(info(&im).iter().any(|n| n.contains("--watch-ingress-without-class")), "{:?}", im.notes);
        // Long names (Ingress names run to 253 characters, Service names to
        // 63) are cut to fit.
        let (long, service) = ("x".repeat(100), "y".repeat(63));
        let yaml = format!(
            "kind: Ingress\nmetadata: {{ name: {long} }}\nspec:\n  ingressClassName: nginx\n  defaultBackend: {{ service: \
             {{ name: {service}, port: {{ number: 80 }} }} }}\n  rules:\n  - host: a.example\n    http:\n      paths:\n      \
             - {{ path: /a, backend: {{ service: {{ name: web, port: {{ number: 80 }} }} }} }}\n      - {{ path: /b, \
             backend: {{ service: {{ name: web, port: {{ number: 80 }} }} }} }}\n"
        );
        let im = run(&yaml);
        assert!(im.text.contains(&format!("name = \"{}-2\"", "x".repeat(56))), "{}", im.text);
        assert!(im.text.contains(&format!("name = \"{}-default\"", "x".repeat(56))), "{}", im.text);
        assert!(im.text.contains(&format!("[backends.{}]", "y".repeat(56))), "{}", im.text);
        let full = "z".repeat(64);
        assert_eq!(unique(&full, |n| n == full), format!("{}-2", "z".repeat(62)));
        // Nothing to import: the error comes with the notes that say why.
        let mut m = Manifests::default();
        m.read("t.yaml", &ingress("a", "a.example", "/", "web", "").replace("nginx", "other"), "default").unwrap();
        let failed = import(&m, &opts()).unwrap_err();
        assert!(failed.errors[0].starts_with("no Ingress rule to import"), "{failed:?}");
        assert!(failed.notes[0].text.contains("default/a: skipped: its class is \"other\""), "{failed:?}");
    }

    #[test]
    fn named_ports_need_the_service() {
        let yaml =
            "kind: Ingress\nmetadata: { name: a }\nspec:\n  rules:\n  - http:\n      paths:\n      - path: /\n        \
                    backend: { service: { name: web, port: { name: http } } }\n";
        let mut m = Manifests::default();
        m.read("t.yaml", yaml, "default").unwrap();
        let errors = import(&m, &opts()).unwrap_err().errors;
        assert!(errors[0].contains("port \"http\""), "{errors:?}");
        m.read(
            "s.yaml",
            "kind: Service\nmetadata: { name: web }\nspec: { ports: [ { name: http, port: 8080 } ] }\n",
            "default",
        )
        .unwrap();
        let im = import(&m, &opts()).unwrap();
        assert!(im.text.contains("\"web.default.svc.cluster.local:8080\""), "{}", im.text);
    }
}
