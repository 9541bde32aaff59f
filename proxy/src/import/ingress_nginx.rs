//! ingress-nginx's canary Ingresses as weir routes.
//!
//! ingress-nginx pairs a canary Ingress (`nginx.ingress.kubernetes.io/canary:
//! "true"`) with the main Ingress of the same host and path, and decides per
//! request (`route_to_alternative_balancer` in its `balancer.lua`):
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
//! Whatever cannot be carried over exactly is a [`Note`] with `lost` set.

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
    /// What and why, naming the Ingress.
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

#[derive(Debug)]
struct RouteOut {
    name: String,
    host: Option<String>,
    path: String,
    stable: String,
    canary: Option<String>,
    /// Basis points (0.01 %).
    weight: u32,
    force: Option<(Source, String)>,
    cohort: Option<(Source, String, Vec<String>)>,
    /// The main Ingress (its index in the input).
    main: usize,
    about: String,
}

struct Importer<'a> {
    input: &'a Manifests,
    opts: &'a Options,
    notes: Vec<Note>,
    backends: Vec<BackendOut>,
    /// (namespace, service, port) → backend name.
    backend_names: BTreeMap<(String, String, Port), String>,
    routes: Vec<RouteOut>,
    route_names: BTreeSet<String>,
}

/// Imports the Ingresses of `input`; `Err` lists what makes a config
/// impossible (a Service port named but not found, nothing to import).
pub(crate) fn import(input: &Manifests, opts: &Options) -> Result<Import, Vec<String>> {
    let mut im = Importer {
        input,
        opts,
        notes: Vec::new(),
        backends: Vec::new(),
        backend_names: BTreeMap::new(),
        routes: Vec::new(),
        route_names: BTreeSet::new(),
    };
    let mut errors = Vec::new();
    let (mut mains, mut canaries) = (Vec::new(), Vec::new());
    for (i, ing) in input.ingresses.iter().enumerate() {
        if let Some(class) = class_of(ing) {
            if class != opts.class {
                im.info(format!("Ingress {}: skipped: its class is \"{class}\", not \"{}\"", ing.id(), opts.class));
                continue;
            }
        }
        match canary_flag(ing) {
            Ok(true) => canaries.push(ing),
            Ok(false) => mains.push((i, ing)),
            Err(e) => {
                im.lost(format!("Ingress {}: {e}; ingress-nginx refuses its canary annotations too", ing.id()));
                mains.push((i, ing));
            }
        }
    }
    for (i, ing) in mains {
        im.main(i, ing, &mut errors);
    }
    for ing in &canaries {
        im.canary(ing, &mut errors);
    }
    if im.routes.is_empty() && errors.is_empty() {
        errors.push("no Ingress rule to import (an Ingress with spec.rules or spec.defaultBackend)".to_string());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let text = im.render();
    if let Err(e) = weir_control::config::parse(&text) {
        return Err(vec![format!("the imported config is not valid: {e}")]);
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

/// Whether the Ingress is a canary; `Err` when it has canary settings but
/// is not one (ingress-nginx: "configured but not enabled").
fn canary_flag(ing: &Ingress) -> Result<bool, String> {
    let enabled = annotation(ing, "canary").and_then(parse_bool).unwrap_or(false);
    if !enabled {
        // As its parser: a weight above 0, or a header, value, pattern or
        // cookie (the total alone does not count).
        let set = |k: &str| match annotation(ing, k) {
            Some(v) if k == "canary-weight" => v.trim().parse::<i64>().is_ok_and(|w| w > 0),
            Some(v) => k != "canary-weight-total" && !v.is_empty(),
            None => false,
        };
        if let Some(k) = CANARY_KEYS.iter().find(|k| set(k)) {
            return Err(format!("has {PREFIX}{k} without {PREFIX}canary: \"true\""));
        }
    }
    Ok(enabled)
}

/// A path as weir's `path_prefix`, and a note when weir's plain string
/// prefix matches more than the Ingress path does.
fn path_prefix(path: Option<&str>, path_type: Option<&str>) -> (String, Option<String>) {
    let path = path.filter(|p| !p.is_empty()).unwrap_or("/");
    match path_type.unwrap_or("ImplementationSpecific") {
        // ingress-nginx serves ImplementationSpecific as an nginx prefix
        // location: a plain string prefix, as weir's.
        "ImplementationSpecific" => (path.to_string(), None),
        "Exact" => {
            (path.to_string(), Some(format!("path {path} is Exact; weir matches it as a prefix (also {path}/more)")))
        }
        // Prefix: element-wise, and a trailing '/' is ignored.
        _ => {
            let trimmed = path.trim_end_matches('/');
            if trimmed.is_empty() {
                ("/".to_string(), None)
            } else {
                let note = format!(
                    "path {path} is a Prefix (whole path segments); weir's path_prefix {trimmed} matches any path \
                     that starts with it (also {trimmed}x)"
                );
                (trimmed.to_string(), Some(note))
            }
        }
    }
}

/// The values of a header pattern that is an anchored list of literals:
/// `^beta$`, `^(beta|gamma)$`, `^(?:beta|gamma)$`.
fn pattern_values(p: &str) -> Option<Vec<String>> {
    let inner = p.strip_prefix('^')?.strip_suffix('$')?;
    let inner = match inner.strip_prefix("(?:").or_else(|| inner.strip_prefix('(')) {
        Some(rest) => rest.strip_suffix(')')?,
        None => inner,
    };
    let mut values = Vec::new();
    for alt in inner.split('|') {
        let mut v = String::new();
        let mut chars = alt.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e) if e.is_ascii_punctuation() => v.push(e),
                    _ => return None,
                },
                c if c.is_ascii_alphanumeric() || "-_~!#%&',;=@`\"<> /:".contains(c) => v.push(c),
                _ => return None,
            }
        }
        if v.is_empty() {
            return None;
        }
        values.push(v);
    }
    Some(values)
}

/// Weight W of total T in basis points, as ingress-nginx draws it
/// (`math.random(T) <= W`, T = 100 unless above 100); `Err` with a note
/// when 0.01 % steps cannot hold it exactly.
fn weight_bp(weight: i64, total: i64) -> (u32, Option<String>) {
    let total = if total > 100 { total } else { 100 };
    let w = weight.clamp(0, total);
    let exact = w * 10_000 % total == 0;
    let bp = ((w * 10_000 + total / 2) / total) as u32;
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

/// A TOML basic string (JSON's escapes are a subset of TOML's).
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl Importer<'_> {
    fn info(&mut self, text: String) {
        self.notes.push(Note { lost: false, text });
    }

    fn lost(&mut self, text: String) {
        self.notes.push(Note { lost: true, text });
    }

    /// Reports the ingress-nginx annotations the import does not read.
    fn unread_annotations(&mut self, ing: &Ingress, read: &[&str]) {
        let unread: Vec<&str> = ing
            .annotations
            .keys()
            .filter_map(|k| k.strip_prefix(PREFIX))
            .filter(|k| !read.contains(k) && *k != "canary" && !CANARY_KEYS.contains(k))
            .collect();
        if !unread.is_empty() {
            self.lost(format!("Ingress {}: not imported: {}", ing.id(), unread.join(", ")));
        }
    }

    /// The backend for a Service port, made on first use.
    fn backend(
        &mut self,
        ing: &Ingress,
        b: &Backend,
        main: Option<&Ingress>,
        errors: &mut Vec<String>,
    ) -> Option<String> {
        let (service, port) = match b.service() {
            Ok(sp) => sp,
            Err(why) => {
                self.lost(format!("Ingress {}: a backend is {why}: its path is not imported", ing.id()));
                return None;
            }
        };
        let key = (ing.namespace.clone(), service.to_string(), port.clone());
        if let Some(name) = self.backend_names.get(&key) {
            return Some(name.clone());
        }
        let given = self
            .opts
            .services
            .get(&format!("{}/{service}", ing.namespace))
            .or_else(|| self.opts.services.get(service))
            .cloned();
        let addrs = match (given, &port) {
            (Some(addrs), _) => addrs,
            (None, Port::Number(n)) => {
                vec![format!("{service}.{}.svc.{}:{n}", ing.namespace, self.opts.cluster_domain)]
            }
            (None, Port::Name(name)) => match self.input.port_number(&ing.namespace, service, name) {
                Some(n) => vec![format!("{service}.{}.svc.{}:{n}", ing.namespace, self.opts.cluster_domain)],
                None => {
                    errors.push(format!(
                        "Ingress {}: service {service} port \"{name}\": no Service {}/{service} with that port in the \
                         input; add the Service's manifest, or give its address with --service {service}=HOST:PORT",
                        ing.id(),
                        ing.namespace
                    ));
                    return None;
                }
            },
        };
        // The main Ingress's backend-protocol holds for its canary too.
        let protocol_of = main.unwrap_or(ing);
        let (http2, tls) = match annotation(protocol_of, "backend-protocol").map(|p| p.to_ascii_uppercase()) {
            None => (false, false),
            Some(p) => match p.as_str() {
                "HTTP" => (false, false),
                "HTTPS" => (false, true),
                "GRPC" => (true, false),
                "GRPCS" => (true, true),
                other => {
                    self.lost(format!(
                        "Ingress {}: backend-protocol {other} is not imported (HTTP/1.1)",
                        protocol_of.id()
                    ));
                    (false, false)
                }
            },
        };
        let mut name: String = service.chars().take(60).collect();
        let base = name.clone();
        let mut n = 2;
        while self.backends.iter().any(|b| b.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        let port_text = match &port {
            Port::Number(n) => n.to_string(),
            Port::Name(s) => s.clone(),
        };
        self.backends.push(BackendOut {
            name: name.clone(),
            addrs,
            http2,
            tls,
            about: format!("Service {}/{service} port {port_text}", ing.namespace),
        });
        self.backend_names.insert(key, name.clone());
        Some(name)
    }

    fn route_name(&mut self, base: &str) -> String {
        let base: String = base.chars().take(60).collect();
        let mut name = base.clone();
        let mut n = 2;
        while self.route_names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.route_names.insert(name.clone());
        name
    }

    /// Each path of a main Ingress is a route to its Service.
    fn main(&mut self, index: usize, ing: &Ingress, errors: &mut Vec<String>) {
        self.unread_annotations(ing, &["backend-protocol"]);
        if annotation(ing, "backend-protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("grpcs"))
        {
            self.info(format!(
                "Ingress {}: weir verifies the upstream's TLS certificate (ingress-nginx does not by default): \
                 set the backends' tls = {{ ca = \"...\" }} for a private CA",
                ing.id()
            ));
        }
        for tls in &ing.spec.tls {
            self.lost(format!(
                "Ingress {}: TLS for {} (Secret {}) is not imported: mount the Secret and set [listen.tls] cert and key",
                ing.id(),
                if tls.hosts.is_empty() { "every host".to_string() } else { tls.hosts.join(", ") },
                tls.secret_name.as_deref().unwrap_or("none")
            ));
        }
        for rule in &ing.spec.rules {
            let host = rule.host.as_deref().filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase());
            if let Some(h) = host.as_deref().filter(|h| h.starts_with('*')) {
                self.lost(format!(
                    "Ingress {}: wildcard host {h} is not imported (weir matches exact hosts)",
                    ing.id()
                ));
                continue;
            }
            let Some(http) = &rule.http else { continue };
            for p in &http.paths {
                let (path, note) = path_prefix(p.path.as_deref(), p.path_type.as_deref());
                if self.routes.iter().any(|r| r.host == host && r.path == path) {
                    self.lost(format!(
                        "Ingress {}: host {} path {path} is already routed by an earlier Ingress (ingress-nginx keeps \
                         the oldest); this one is not imported",
                        ing.id(),
                        host.as_deref().unwrap_or("*")
                    ));
                    continue;
                }
                if let Some(note) = note {
                    self.info(format!("Ingress {}: {note}", ing.id()));
                }
                let Some(stable) = self.backend(ing, &p.backend, None, errors) else { continue };
                let name = self.route_name(&ing.name);
                self.routes.push(RouteOut {
                    name,
                    host: host.clone(),
                    path,
                    stable,
                    canary: None,
                    weight: 0,
                    force: None,
                    cohort: None,
                    main: index,
                    about: format!("Ingress {}", ing.id()),
                });
            }
        }
        if let Some(b) = ing.spec.default_backend.as_ref().or(ing.spec.backend.as_ref()) {
            if self.routes.iter().any(|r| r.host.is_none() && r.path == "/") {
                self.lost(format!(
                    "Ingress {}: defaultBackend is not imported: another Ingress's rule already takes every host's /",
                    ing.id()
                ));
            } else if let Some(stable) = self.backend(ing, b, None, errors) {
                let name = self.route_name(&format!("{}-default", ing.name));
                self.routes.push(RouteOut {
                    name,
                    host: None,
                    path: "/".to_string(),
                    stable,
                    canary: None,
                    weight: 0,
                    force: None,
                    cohort: None,
                    main: index,
                    about: format!("Ingress {} defaultBackend", ing.id()),
                });
            }
        }
    }

    /// Each path of a canary Ingress adds its Service as the canary of the
    /// main route with the same host and path.
    fn canary(&mut self, ing: &Ingress, errors: &mut Vec<String>) {
        self.unread_annotations(ing, &[]);
        let id = ing.id();
        let get = |k: &str| annotation(ing, k).filter(|v| !v.is_empty());
        let int = |k: &str, default: i64, notes: &mut Vec<Note>| match get(k) {
            None => default,
            Some(v) => v.trim().parse().unwrap_or_else(|_| {
                notes.push(Note {
                    lost: false,
                    text: format!("Ingress {id}: {k} \"{v}\" is not a number; ingress-nginx reads it as {default}"),
                });
                default
            }),
        };
        let mut notes = Vec::new();
        let weight = int("canary-weight", 0, &mut notes);
        let total = int("canary-weight-total", 100, &mut notes);
        self.notes.append(&mut notes);
        if get("canary-weight-total").is_some() && total <= 100 && total != 100 {
            self.info(format!(
                "Ingress {id}: canary-weight-total {total} is ignored by ingress-nginx (it uses 100 below 101)"
            ));
        }
        let (bp, note) = weight_bp(weight, total);
        if let Some(n) = note {
            self.lost(format!("Ingress {id}: {n}"));
        }
        let header = get("canary-by-header");
        let value = get("canary-by-header-value");
        let pattern = get("canary-by-header-pattern");
        let cookie = get("canary-by-cookie");
        let (mut force, mut cohort) = (None, None);
        match header {
            None => {
                if value.is_some() || pattern.is_some() {
                    self.info(format!(
                        "Ingress {id}: canary-by-header-value/-pattern without canary-by-header has no effect \
                         (in ingress-nginx too)"
                    ));
                }
            }
            Some(h) => {
                if let Some(v) = value {
                    cohort = Some((Source::Header, h.to_string(), vec![v.to_string()]));
                    if pattern.is_some() {
                        self.info(format!(
                            "Ingress {id}: canary-by-header-pattern is ignored when canary-by-header-value is set \
                             (in ingress-nginx too)"
                        ));
                    }
                } else if let Some(p) = pattern {
                    match pattern_values(p) {
                        Some(values) => cohort = Some((Source::Header, h.to_string(), values)),
                        None => self.lost(format!(
                            "Ingress {id}: canary-by-header-pattern \"{p}\" is a regular expression; weir matches \
                             listed values only (a pattern such as ^(a|b)$ is imported): requests it would send to \
                             the canary follow the other rules instead"
                        )),
                    }
                } else {
                    force = Some((Source::Header, h.to_string()));
                }
            }
        }
        if let Some(c) = cookie {
            if force.is_none() {
                force = Some((Source::Cookie, c.to_string()));
                if cohort.is_some() {
                    self.lost(format!(
                        "Ingress {id}: a request with both the canary-by-header value and the cookie {c}=never goes \
                         to the main Service in weir (the opt-out wins), to the canary in ingress-nginx"
                    ));
                }
            } else {
                cohort = Some((Source::Cookie, c.to_string(), vec!["always".to_string()]));
                if bp > 0 {
                    self.lost(format!(
                        "Ingress {id}: the cookie {c}=never is not imported (the header is weir's one force key): \
                         such requests follow the weight"
                    ));
                }
            }
        }
        if force.is_some() {
            self.info(format!(
                "Ingress {id}: weir reads the force values always/never in any case; ingress-nginx only in lower case"
            ));
        }
        if bp > 0 && bp < 10_000 {
            self.info(format!(
                "Ingress {id}: the weight is drawn per request, as in ingress-nginx; add sticky = {{ cookie = \"...\" }} \
                 or {{ header = \"...\" }} to keep each user on one side"
            ));
        }
        let mut matched = false;
        for rule in &ing.spec.rules {
            let host = rule.host.as_deref().filter(|h| !h.is_empty()).map(|h| h.to_ascii_lowercase());
            let Some(http) = &rule.http else { continue };
            for p in &http.paths {
                let (path, _) = path_prefix(p.path.as_deref(), p.path_type.as_deref());
                let Some(i) = self.routes.iter().position(|r| r.host == host && r.path == path) else {
                    self.lost(format!(
                        "Ingress {id}: no main Ingress routes host {} path {path}: this canary path is not imported \
                         (ingress-nginx ignores it too)",
                        host.as_deref().unwrap_or("*")
                    ));
                    continue;
                };
                if let Some(other) = &self.routes[i].canary {
                    self.lost(format!(
                        "Ingress {id}: host {} path {path} already has a canary ({other}); ingress-nginx allows one \
                         canary per rule: this one is not imported",
                        host.as_deref().unwrap_or("*")
                    ));
                    continue;
                }
                let main_ing = self.input.ingresses.get(self.routes[i].main);
                let Some(canary) = self.backend(ing, &p.backend, main_ing, errors) else { continue };
                let r = &mut self.routes[i];
                if r.stable == canary {
                    self.lost(format!(
                        "Ingress {id}: its Service is the main Ingress's own: path {path} is not imported"
                    ));
                    continue;
                }
                r.canary = Some(canary);
                r.weight = bp;
                r.force = force.clone();
                r.cohort = cohort.clone();
                r.about = format!("{}, canary Ingress {id}", r.about);
                matched = true;
            }
        }
        if !matched && ing.spec.rules.is_empty() {
            self.lost(format!("Ingress {id}: a canary Ingress without rules is not imported"));
        }
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
                let _ = writeln!(out, "# {tag}: {}", n.text);
            }
        }
        for b in &self.backends {
            let _ = writeln!(out, "\n# {}", b.about);
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
            let _ = writeln!(out, "\n# {}", r.about);
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
            if let Some(c) = &r.canary {
                let _ = writeln!(out, "canary = {}", quote(c));
                let _ = writeln!(out, "weight = {}", percent(r.weight));
            }
            if let Some((source, name)) = &r.force {
                let _ = writeln!(out, "force = {{ {} = {} }}", source.key(), quote(name));
            }
            if let Some((source, name, values)) = &r.cohort {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Import {
        let mut m = Manifests::default();
        m.read("t.yaml", yaml, "default").unwrap();
        let opts = Options { class: "nginx".into(), cluster_domain: "cluster.local".into(), services: BTreeMap::new() };
        import(&m, &opts).unwrap()
    }

    fn ingress(name: &str, host: &str, path: &str, service: &str, annotations: &str) -> String {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\n\
             spec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: {path}\n        pathType: Prefix\n        \
             backend: {{ service: {{ name: {service}, port: {{ number: 80 }} }} }}\n"
        )
    }

    fn pair(canary_annotations: &str) -> Import {
        let yaml = ingress("main", "a.example", "/", "prod", "")
            + &ingress(
                "can",
                "a.example",
                "/",
                "next",
                &format!("nginx.ingress.kubernetes.io/canary: \"true\", {canary_annotations}"),
            );
        run(&yaml)
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
    fn literal_patterns_only() {
        assert_eq!(pattern_values("^(beta|gamma)$"), Some(vec!["beta".into(), "gamma".into()]));
        assert_eq!(pattern_values("^(?:a\\.b)$"), Some(vec!["a.b".into()]));
        assert_eq!(pattern_values("^beta$"), Some(vec!["beta".into()]));
        for p in ["beta", "^beta", "beta$", "^bet.*$", "^(a|)$", "^[ab]$", "^a\\d$"] {
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
        assert!(!im.notes.iter().any(|n| n.lost), "{:?}", im.notes);
    }

    #[test]
    fn header_value_with_cookie_reports_the_precedence_it_cannot_keep() {
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x-group, nginx.ingress.kubernetes.io/canary-by-header-value: beta, \
             nginx.ingress.kubernetes.io/canary-by-cookie: canary",
        );
        assert!(im.text.contains("cohort = { header = \"x-group\", values = [\"beta\"] }"), "{}", im.text);
        assert!(im.text.contains("force = { cookie = \"canary\" }"), "{}", im.text);
        assert!(im.notes.iter().any(|n| n.lost && n.text.contains("canary=never")), "{:?}", im.notes);
    }

    #[test]
    fn header_and_cookie_and_weight() {
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x-canary, nginx.ingress.kubernetes.io/canary-by-cookie: c, \
             nginx.ingress.kubernetes.io/canary-weight: \"40\"",
        );
        assert!(im.text.contains("force = { header = \"x-canary\" }"), "{}", im.text);
        assert!(im.text.contains("cohort = { cookie = \"c\", values = [\"always\"] }"), "{}", im.text);
        assert!(im.notes.iter().any(|n| n.lost && n.text.contains("c=never")), "{:?}", im.notes);
        // At weight 0, never and the weight agree: nothing lost.
        let im = pair(
            "nginx.ingress.kubernetes.io/canary-by-header: x-canary, nginx.ingress.kubernetes.io/canary-by-cookie: c",
        );
        assert!(!im.notes.iter().any(|n| n.lost), "{:?}", im.notes);
    }

    #[test]
    fn what_cannot_be_mapped_is_reported() {
        let yaml = ingress("main", "a.example", "/api/", "prod", "nginx.ingress.kubernetes.io/rewrite-target: /")
            + &ingress("can", "a.example", "/api", "next", "nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-by-header: x, nginx.ingress.kubernetes.io/canary-by-header-pattern: \"^bet\"")
            + &ingress("stray", "b.example", "/", "next", "nginx.ingress.kubernetes.io/canary: \"true\"")
            + &ingress("wild", "\"*.example\"", "/", "prod", "")
            + &ingress("other", "c.example", "/", "prod", "nginx.ingress.kubernetes.io/canary-weight: \"5\"");
        let im = run(&yaml);
        let lost: Vec<&str> = im.notes.iter().filter(|n| n.lost).map(|n| n.text.as_str()).collect();
        for want in [
            "rewrite-target",
            "^bet",
            "no main Ingress routes host b.example",
            "wildcard host",
            "without nginx.ingress.kubernetes.io/canary",
        ] {
            assert!(lost.iter().any(|l| l.contains(want)), "{want} not in {lost:#?}");
        }
        // /api/ (Prefix) and /api are one path: the canary found its route.
        assert!(im.text.contains("path_prefix = \"/api\""), "{}", im.text);
        assert!(im.text.contains("canary = \"next\""), "{}", im.text);
        // Every note is in the config's header too.
        for n in &im.notes {
            assert!(im.text.contains(&n.text), "{}", n.text);
        }
    }

    #[test]
    fn named_ports_need_the_service() {
        let yaml =
            "kind: Ingress\nmetadata: { name: a }\nspec:\n  rules:\n  - http:\n      paths:\n      - path: /\n        \
                    backend: { service: { name: web, port: { name: http } } }\n";
        let mut m = Manifests::default();
        m.read("t.yaml", yaml, "default").unwrap();
        let opts = Options { class: "nginx".into(), cluster_domain: "cluster.local".into(), services: BTreeMap::new() };
        let errors = import(&m, &opts).unwrap_err();
        assert!(errors[0].contains("port \"http\""), "{errors:?}");
        m.read(
            "s.yaml",
            "kind: Service\nmetadata: { name: web }\nspec: { ports: [ { name: http, port: 8080 } ] }\n",
            "default",
        )
        .unwrap();
        let im = import(&m, &opts).unwrap();
        assert!(im.text.contains("\"web.default.svc.cluster.local:8080\""), "{}", im.text);
    }
}
