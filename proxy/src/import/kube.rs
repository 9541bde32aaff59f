//! The parts of Kubernetes manifests the importer reads: Ingresses
//! (`networking.k8s.io/v1`, and the `v1beta1` shape), Services (to name a
//! port by its name) and `List`s of them, as `kubectl get -o yaml` writes.
//! Every other kind, and every other field, is skipped. A list written as
//! `null` (`rules: null`, or a key with nothing after it) reads as empty:
//! `serde_yaml_ng` reads a null as an empty sequence (pinned by a test).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// An Ingress, as read.
#[derive(Debug)]
pub(crate) struct Ingress {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`, as (seconds, nanoseconds) since the
    /// Unix epoch; `None` when absent (Go's zero time: before any other).
    pub(crate) created: Option<(i64, u32)>,
    pub(crate) spec: IngressSpec,
}

impl Ingress {
    /// `namespace/name`, for messages.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A Service's ports, to resolve a backend's `port.name`.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) ports: Vec<ServicePort>,
}

/// What the files hold that the importer reads.
#[derive(Debug, Default)]
pub(crate) struct Manifests {
    pub(crate) ingresses: Vec<Ingress>,
    pub(crate) services: Vec<Service>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Value,
    #[serde(default)]
    items: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: String,
    namespace: Option<String>,
    /// Optional: `annotations:` with nothing after it is null.
    annotations: Option<BTreeMap<String, String>>,
    /// RFC 3339, as the API server writes it (`2024-05-01T10:00:00Z`).
    creation_timestamp: Option<String>,
}

/// `spec` of an Ingress.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IngressSpec {
    pub(crate) ingress_class_name: Option<String>,
    pub(crate) default_backend: Option<Backend>,
    /// `v1beta1`'s name for `defaultBackend`.
    pub(crate) backend: Option<Backend>,
    #[serde(default)]
    pub(crate) tls: Vec<Tls>,
    #[serde(default)]
    pub(crate) rules: Vec<Rule>,
}

/// One host's rules.
#[derive(Debug, Deserialize)]
pub(crate) struct Rule {
    pub(crate) host: Option<String>,
    pub(crate) http: Option<RuleHttp>,
}

/// A rule's paths.
#[derive(Debug, Deserialize)]
pub(crate) struct RuleHttp {
    #[serde(default)]
    pub(crate) paths: Vec<Path>,
}

/// One path of a rule.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Path {
    pub(crate) path: Option<String>,
    pub(crate) path_type: Option<String>,
    pub(crate) backend: Backend,
}

/// Where a path goes: a Service (`v1`: `service`, `v1beta1`:
/// `serviceName`/`servicePort`) or a `resource`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Backend {
    service: Option<ServiceRef>,
    service_name: Option<String>,
    service_port: Option<IntOrString>,
    resource: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ServiceRef {
    name: String,
    port: Option<PortRef>,
}

#[derive(Debug, Deserialize)]
struct PortRef {
    number: Option<u16>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u16),
    Str(String),
}

/// A Service port, by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Port {
    Number(u16),
    Name(String),
}

impl Backend {
    /// Whether it is a `resource` (which ingress-nginx skips).
    pub(crate) fn is_resource(&self) -> bool {
        self.resource.is_some()
    }

    /// The Service and port, or why there is none.
    pub(crate) fn service(&self) -> Result<(&str, Port), &'static str> {
        if self.resource.is_some() {
            return Err("a resource backend, not a Service");
        }
        let (name, port) = match (&self.service, &self.service_name) {
            (Some(s), _) => {
                let port = s.port.as_ref().and_then(|p| match (&p.number, &p.name) {
                    (Some(n), _) => Some(Port::Number(*n)),
                    (None, Some(n)) => Some(Port::Name(n.clone())),
                    (None, None) => None,
                });
                (s.name.as_str(), port)
            }
            (None, Some(name)) => {
                let port = self.service_port.as_ref().map(|p| match p {
                    IntOrString::Int(n) => Port::Number(*n),
                    IntOrString::Str(s) => s.parse().map(Port::Number).unwrap_or_else(|_| Port::Name(s.clone())),
                });
                (name.as_str(), port)
            }
            (None, None) => return Err("no service"),
        };
        match port {
            Some(p) if !name.is_empty() => Ok((name, p)),
            Some(_) => Err("a service without a name"),
            None => Err("a service without a port"),
        }
    }
}

/// A TLS entry: hosts and the Secret with their certificate.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Tls {
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    pub(crate) secret_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ServiceSpec {
    #[serde(default)]
    ports: Vec<ServicePort>,
}

/// One port of a Service.
#[derive(Debug, Deserialize)]
pub(crate) struct ServicePort {
    pub(crate) name: Option<String>,
    pub(crate) port: u16,
}

impl Manifests {
    /// Adds the Ingresses and Services of one YAML stream (`---`-separated
    /// documents). `origin` names it in errors; `namespace` is used where a
    /// manifest has none.
    pub(crate) fn read(&mut self, origin: &str, text: &str, namespace: &str) -> Result<(), String> {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(doc).map_err(|e| format!("{origin}: document {}: {e}", i + 1))?;
            self.add(value, namespace).map_err(|e| format!("{origin}: document {}: {e}", i + 1))?;
        }
        Ok(())
    }

    fn add(&mut self, value: Value, namespace: &str) -> Result<(), String> {
        if value.is_null() {
            return Ok(()); // an empty document (a leading or trailing `---`)
        }
        let o: Object = typed(value)?;
        let namespace_of = |m: &Meta| m.namespace.clone().unwrap_or_else(|| namespace.to_string());
        match o.kind.as_str() {
            "List" | "IngressList" | "ServiceList" => {
                for (i, item) in o.items.into_iter().enumerate() {
                    self.add(item, namespace).map_err(|e| format!("items[{i}]: {e}"))?;
                }
            }
            "Ingress" => {
                let spec: IngressSpec = if o.spec.is_null() {
                    IngressSpec::default()
                } else {
                    typed(o.spec).map_err(|e| format!("Ingress {}: spec.{e}", o.metadata.name))?
                };
                let created = match &o.metadata.creation_timestamp {
                    None => None,
                    Some(t) => Some(rfc3339(t).ok_or_else(|| {
                        format!(
                            "Ingress {}: metadata.creationTimestamp: \"{t}\" is not an RFC 3339 time",
                            o.metadata.name
                        )
                    })?),
                };
                self.ingresses.push(Ingress {
                    namespace: namespace_of(&o.metadata),
                    name: o.metadata.name,
                    annotations: o.metadata.annotations.unwrap_or_default(),
                    created,
                    spec,
                });
            }
            "Service" => {
                let spec: ServiceSpec = if o.spec.is_null() {
                    ServiceSpec::default()
                } else {
                    typed(o.spec).map_err(|e| format!("Service {}: spec.{e}", o.metadata.name))?
                };
                self.services.push(Service {
                    namespace: namespace_of(&o.metadata),
                    name: o.metadata.name,
                    ports: spec.ports,
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// `value` as a `T`; the error names the key that did not fit
/// (`rules[0].host: invalid type: …`).
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// An RFC 3339 time (`2024-05-01T10:00:00Z`, `…T10:00:00.5+02:00`) as
/// (seconds, nanoseconds) since the Unix epoch, for ordering Ingresses as
/// ingress-nginx does (Go's `time.Time.Before`).
fn rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if sep(i, b".") {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = b.get(start..i)?;
        if digits.is_empty() {
            return None;
        }
        for (k, d) in digits.iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - k as u32);
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [h1, h2, m1, m2];
            if !digits.iter().all(|d| d.is_ascii_digit()) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            let minutes = (h1 * 10 + h2) * 60 + m1 * 10 + m2;
            if *sign == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
        _ => return None,
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60 + second - offset, nanos))
}

impl Manifests {
    /// The number of the port `name` of Service `namespace/service`, if the
    /// input has that Service.
    pub(crate) fn port_number(&self, namespace: &str, service: &str, name: &str) -> Option<u16> {
        let s = self.services.iter().find(|s| s.namespace == namespace && s.name == service)?;
        s.ports.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1_v1beta1_lists_and_skips_other_kinds() {
        let text = r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: web }
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: { name: a, namespace: shop }
  spec:
    rules:
    - host: a.example
      http:
        paths:
        - { path: /, pathType: Prefix, backend: { service: { name: web, port: { name: http } } } }
- apiVersion: extensions/v1beta1
  kind: Ingress
  metadata: { name: b }
  spec:
    backend: { serviceName: old, servicePort: 8080 }
---
kind: Service
metadata: { name: web, namespace: shop }
spec: { ports: [ { name: http, port: 8000 } ] }
---
"#;
        let mut m = Manifests::default();
        m.read("t.yaml", text, "default").unwrap();
        assert_eq!(m.ingresses.len(), 2);
        assert_eq!(m.ingresses[0].id(), "shop/a");
        assert_eq!(m.ingresses[1].id(), "default/b");
        let path = &m.ingresses[0].spec.rules[0].http.as_ref().unwrap().paths[0];
        assert_eq!(path.backend.service(), Ok(("web", Port::Name("http".into()))));
        assert_eq!(m.ingresses[1].spec.backend.as_ref().unwrap().service(), Ok(("old", Port::Number(8080))));
        assert_eq!(m.port_number("shop", "web", "http"), Some(8000));
        assert_eq!(m.port_number("default", "web", "http"), None);
    }

    #[test]
    fn errors_name_the_file_and_document() {
        let mut m = Manifests::default();
        let e = m.read("x.yaml", "kind: Ingress\nmetadata: { name: a }\n---\nkind: [", "default").unwrap_err();
        assert!(e.starts_with("x.yaml: document 2:"), "{e}");
        assert!(e.contains("at line 5 column 1"), "{e}"); // lines of the whole file
        let e =
            m.read("y.yaml", "kind: Ingress\nmetadata: { name: a, annotations: { k: [1] } }\n", "default").unwrap_err();
        assert!(e.starts_with("y.yaml: document 1: metadata.annotations.k: invalid type"), "{e}");
        let e = m
            .read("z.yaml", "kind: Ingress\nmetadata: { name: a }\nspec: { rules: [ { host: [] } ] }\n", "default")
            .unwrap_err();
        assert!(e.starts_with("z.yaml: document 1: Ingress a: spec.rules[0].host: invalid type"), "{e}");
    }

    #[test]
    fn null_lists_read_as_empty() {
        let text = r#"
kind: List
items: null
---
kind: Ingress
metadata: { name: a, creationTimestamp: "2024-05-01T10:00:00Z" }
spec:
  tls:
  rules:
  - host: a.example
    http: { paths: null }
  - host: b.example
    http:
      paths:
      - { path: /, backend: { service: { name: web, port: { number: 80 } } } }
---
kind: Ingress
metadata: { name: b }
spec: { rules: null, tls: [ { hosts: null, secretName: s } ] }
---
kind: Service
metadata: { name: web }
spec: { ports: null }
"#;
        let mut m = Manifests::default();
        m.read("t.yaml", text, "default").unwrap();
        assert_eq!(m.ingresses.len(), 2);
        let a = &m.ingresses[0].spec;
        assert!(a.tls.is_empty());
        assert!(a.rules[0].http.as_ref().unwrap().paths.is_empty());
        assert_eq!(a.rules[1].http.as_ref().unwrap().paths.len(), 1);
        let b = &m.ingresses[1].spec;
        assert!(b.rules.is_empty());
        assert!(b.tls[0].hosts.is_empty());
        assert!(m.services[0].ports.is_empty());
    }

    #[test]
    fn creation_timestamps() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(rfc3339("2024-05-01T10:00:00Z"), Some((1_714_557_600, 0)));
        assert_eq!(rfc3339("2024-05-01T12:00:00.25+02:00"), Some((1_714_557_600, 250_000_000)));
        assert_eq!(rfc3339("2000-02-29T00:00:00-00:30"), Some((951_784_200, 0)));
        for bad in ["", "2024-05-01", "2024-05-01T10:00:00", "2024-13-01T10:00:00Z", "2024-05-01T10:00:00.Z", "x"] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
        let mut m = Manifests::default();
        m.read(
            "t.yaml",
            "kind: Ingress\nmetadata: { name: a, creationTimestamp: \"2024-05-01T10:00:00Z\" }\n",
            "default",
        )
        .unwrap();
        assert_eq!(m.ingresses[0].created, Some((1_714_557_600, 0)));
        let e = m.read("u.yaml", "kind: Ingress\nmetadata: { name: b, creationTimestamp: yesterday }\n", "default");
        assert!(e
            .unwrap_err()
            .contains("Ingress b: metadata.creationTimestamp: \"yesterday\" is not an RFC 3339 time"));
    }
}
