//! OFREP: an application asking through OpenFeature's own OFREP provider
//! (PyPI `openfeature-provider-ofrep`, `tests/ofrep/evaluate.py`) is told
//! the side the proxy routes the same user to; the protocol's errors.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;

use crate::{client, get, workspace, InProcess, Mode, Upstream};

const TOKEN: &str = "ofrep-test-token-0123456789";

/// weir with `web` at 30 %, sticky on `x-user-id`, forced by `x-canary`,
/// cohort `x-team: beta`; `shop` at 50 %, sticky on the cookie `uid`, whose
/// cohort is two of those users; and `assets` without a canary.
async fn weir() -> (Upstream, Upstream, InProcess, tempfile::TempDir) {
    let stable = Upstream::start("stable", Mode::Named).await;
    let canary = Upstream::start("canary", Mode::Named).await;
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("ofrep.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let text = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[ofrep]
addr = "127.0.0.1:0"
token_file = "{token}"
[backends.stable]
addrs = ["{s}"]
version = "v1"
[backends.canary]
addrs = ["{c}"]
version = "v2"

[[routes]]
name = "assets"
match = {{ path_prefix = "/static/" }}
stable = "stable"

[[routes]]
name = "shop"
match = {{ path_prefix = "/shop/" }}
stable = "stable"
canary = "canary"
weight = 50
sticky = {{ cookie = "uid" }}
cohort = {{ cookie = "uid", values = ["user-5", "user-6"] }}

[[routes]]
name = "web"
stable = "stable"
canary = "canary"
weight = 30
sticky = {{ header = "x-user-id" }}
force = {{ header = "x-canary" }}
cohort = {{ header = "x-team", values = ["beta"] }}
"#,
        token = token.display(),
        s = stable.addr,
        c = canary.addr,
    );
    let w = InProcess::start(&text).await;
    (stable, canary, w, secrets)
}

fn ofrep(w: &InProcess) -> SocketAddr {
    w.weir.ofrep_addr().expect("[ofrep] is configured")
}

/// Runs the OpenFeature provider on `lines` (`FLAG\tKEY\tATTRS`); its
/// answers, one per line.
async fn provider(addr: SocketAddr, token: &str, lines: &[String]) -> Vec<serde_json::Value> {
    let mut child = tokio::process::Command::new("python3")
        .arg(workspace().join("tests/ofrep/evaluate.py"))
        .args([format!("http://{addr}"), token.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is needed");
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n") + "\n";
    let feed = tokio::spawn(async move {
        stdin.write_all(input.as_bytes()).await.unwrap();
    });
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await.unwrap().unwrap();
    feed.await.unwrap();
    assert!(
        out.status.success(),
        "the OFREP provider failed (.ci/run installs openfeature-provider-ofrep from PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), lines.len());
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openfeature_sdk_is_told_the_side_the_proxy_routes_each_user_to() {
    let (_stable, _canary, w, _secrets) = weir().await;
    // 2 000 users: most by their key alone; some forced either way (the
    // header's name in another case), some in the cohort.
    let users: Vec<(String, Vec<(&str, &str)>)> = (0..2000)
        .map(|i| {
            let extra = match i % 50 {
                0 => vec![("x-canary", "always")],
                1 => vec![("X-Canary", "never")],
                2 => vec![("x-team", "beta")],
                _ => vec![],
            };
            (format!("user-{i}"), extra)
        })
        .collect();
    // Each user asks for both flags.
    let lines: Vec<String> = users
        .iter()
        .flat_map(|(key, extra)| {
            let attrs: serde_json::Map<String, serde_json::Value> =
                extra.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
            let attrs = serde_json::Value::Object(attrs);
            [format!("web\t{key}\t{attrs}"), format!("shop\t{key}\t{attrs}")]
        })
        .collect();
    let answers = provider(ofrep(&w), TOKEN, &lines).await;
    let c = client();
    let mut canary = [0; 2];
    for ((key, extra), answer) in users.iter().zip(answers.chunks(2)) {
        let mut headers = vec![("x-user-id", key.as_str())];
        headers.extend(extra.iter().copied());
        let (status, web) = get(&c, &w.url("/"), &headers).await;
        assert_eq!(status, 200);
        let cookie = format!("theme=dark; uid={key}");
        headers.push(("cookie", &cookie));
        let (status, shop) = get(&c, &w.url("/shop/"), &headers).await;
        assert_eq!(status, 200);
        let forced_or_cohort = !extra.is_empty();
        let in_shop_cohort = key == "user-5" || key == "user-6";
        for ((served, answer), targeted) in
            [(&web, &answer[0]), (&shop, &answer[1])].into_iter().zip([forced_or_cohort, in_shop_cohort])
        {
            assert_eq!(answer["value"], served.as_str(), "{key} {extra:?}: {answer}");
            assert_eq!(answer["variant"], served.as_str(), "{key}: {answer}");
            let reason = if targeted { "TARGETING_MATCH" } else { "SPLIT" };
            assert_eq!(answer["reason"], reason, "{key} {extra:?}: {answer}");
            assert!(answer["error"].is_null(), "{answer}");
        }
        canary[0] += usize::from(web == "canary");
        canary[1] += usize::from(shop == "canary");
    }
    // 30 % of the keyed users, plus the forced and cohort ones; 50 %.
    // (The hash is fixed: these counts are too.)
    assert!((560..=760).contains(&canary[0]), "{} of 2000 on web's canary", canary[0]);
    assert!((900..=1100).contains(&canary[1]), "{} of 2000 on shop's canary", canary[1]);

    // Errors the SDK understands: an unknown flag, no targeting key, a
    // route without a canary is stable for everyone; a wrong token.
    let lines = ["nope\tuser-1\t{}", "web\t\t{}", "assets\tuser-1\t{}"].map(String::from);
    let answers = provider(ofrep(&w), TOKEN, &lines).await;
    assert_eq!(answers[0]["error"], "FLAG_NOT_FOUND", "{}", answers[0]);
    assert_eq!(answers[0]["value"], "default");
    assert_eq!(answers[1]["error"], "TARGETING_KEY_MISSING", "{}", answers[1]);
    assert_eq!((&answers[2]["value"], &answers[2]["reason"]), (&"stable".into(), &"STATIC".into()), "{}", answers[2]);
    let answers = provider(ofrep(&w), "wrong-token", &["web\tuser-1\t{}".to_string()]).await;
    assert_eq!(answers[0]["error"], "GENERAL", "{}", answers[0]);
    assert_eq!(answers[0]["value"], "default");
}

/// POST `path` on the OFREP listener; status, ETag and JSON body.
async fn post(
    w: &InProcess,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, serde_json::Value) {
    let mut req = Request::post(format!("http://{}{path}", ofrep(w))).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client().request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = resp.status();
    let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, etag, json)
}

#[tokio::test]
async fn ofrep_errors_bulk_evaluation_and_etags() {
    let (_stable, _canary, w, _secrets) = weir().await;
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let one = "/ofrep/v1/evaluate/flags/web";
    let ctx = r#"{"context": {"targetingKey": "user-7"}}"#;

    let (status, _, body) = post(&w, one, ctx, &[]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = post(&w, one, ctx, &[("authorization", "Bearer nope")]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = post(&w, one, ctx, &auth).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key"], "web");
    assert_eq!(body["reason"], "SPLIT");
    assert_eq!(body["metadata"]["weight"], 30.0);
    let side = body["value"].as_str().unwrap().to_string();
    assert_eq!(body["metadata"]["backend"], side.as_str());

    let (status, _, body) = post(&w, "/ofrep/v1/evaluate/flags/nope", ctx, &auth).await;
    assert_eq!(
        (status, &body["errorCode"], &body["key"]),
        (StatusCode::NOT_FOUND, &"FLAG_NOT_FOUND".into(), &"nope".into())
    );
    let (status, _, body) = post(&w, one, "{not json", &auth).await;
    assert_eq!((status, &body["errorCode"]), (StatusCode::BAD_REQUEST, &"PARSE_ERROR".into()), "{body}");
    let (status, _, body) = post(&w, one, r#"{"context": 5}"#, &auth).await;
    assert_eq!((status, &body["errorCode"]), (StatusCode::BAD_REQUEST, &"INVALID_CONTEXT".into()), "{body}");
    let (status, _, body) = post(&w, one, "{}", &auth).await;
    assert_eq!((status, &body["errorCode"]), (StatusCode::BAD_REQUEST, &"TARGETING_KEY_MISSING".into()), "{body}");
    let big = format!(r#"{{"context": {{"targetingKey": "{}"}}}}"#, "k".repeat(100_000));
    let (status, _, _) = post(&w, one, &big, &auth).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = post(&w, "/ofrep/v2/evaluate/flags/web", ctx, &auth).await;
    assert_eq!(status, 404);
    let (status, _) = get(&client(), &format!("http://{}{one}", ofrep(&w)), &auth).await;
    assert_eq!(status, 405);

    // Bulk: every route, in config order, each as the single call says.
    let (status, etag, body) = post(&w, "/ofrep/v1/evaluate/flags", ctx, &auth).await;
    assert_eq!(status, 200, "{body}");
    let flags = body["flags"].as_array().unwrap();
    let keys: Vec<_> = flags.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["assets", "shop", "web"]);
    assert_eq!(flags[0]["value"], "stable");
    assert_eq!(flags[2]["value"], side.as_str());
    let etag = etag.expect("an ETag");
    let (status, _, body) = post(&w, "/ofrep/v1/evaluate/flags", ctx, &[auth[0], ("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "{body}");
    // Another user may get another answer, so another tag.
    let (status, other, _) = post(
        &w,
        "/ofrep/v1/evaluate/flags",
        r#"{"context": {"targetingKey": "x-canary-always", "x-canary": "always"}}"#,
        &[auth[0], ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(other.as_deref(), Some(etag.as_str()));
}
