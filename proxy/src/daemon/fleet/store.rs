//! The fleet's keys in etcd, and the few operations weir does on them. Every
//! call has the configured timeout: a hung etcd member is an error here,
//! never a stuck daemon.
//!
//! | key (under `/weir/fleet/NAME/`) | value | lease |
//! | --- | --- | --- |
//! | `leader` | the leader's replica id; its create revision is the term | the leader's |
//! | `state` | [`Committed`] (JSON) | none |
//! | `members/ID` | [`MemberReport`] (JSON) | the member's |

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions, TlsOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};
use weir_control::config::Fleet as FleetConfig;
use weir_control::fleet::{Committed, MemberReport};

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
}

/// A commit refused by its conditions.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The state moved on since the revision the commit was decided on.
    Moved,
    /// The writer is no longer the leader of the term it wrote for.
    NotLeader,
}

/// The committed state and its revision (0: none yet).
pub(crate) type Versioned = (Option<Committed>, i64);

/// The fleet's keys, through one etcd client.
#[derive(Clone)]
pub(crate) struct Store {
    client: Client,
    timeout: Duration,
    pub(crate) leader_key: String,
    pub(crate) state_key: String,
    pub(crate) members_prefix: String,
    /// Member keys already logged as unreadable.
    #[allow(clippy::disallowed_types)] // off the request path, never held across an await
    unreadable: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Store {
    /// Connects (lazily: an unreachable etcd is an error at the first call,
    /// not here). TLS files are read now.
    pub(crate) async fn connect(cfg: &FleetConfig) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_timeout(cfg.timeout)
            .with_connect_timeout(cfg.timeout)
            .with_keep_alive(Duration::from_secs(1), cfg.timeout)
            .with_require_leader(true);
        if let Some(tls) = &cfg.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| StoreError::Invalid(format!("fleet.tls.ca_file {}: {e}", ca.display())))?;
                t = t.ca_certificate(Certificate::from_pem(pem));
            } else {
                t = t.with_native_roots();
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                let read = |p: &std::path::Path, what: &str| {
                    std::fs::read(p).map_err(|e| StoreError::Invalid(format!("fleet.tls.{what} {}: {e}", p.display())))
                };
                t = t.identity(Identity::from_pem(read(cert, "cert_file")?, read(key, "key_file")?));
            }
            if let Some(d) = &tls.domain {
                t = t.domain_name(d.clone());
            }
            opts = opts.with_tls(t);
        }
        let client = within(cfg.timeout, Client::connect(&cfg.endpoints, Some(opts))).await?;
        let prefix = format!("/weir/fleet/{}/", cfg.name);
        Ok(Store {
            client,
            timeout: cfg.timeout,
            leader_key: format!("{prefix}leader"),
            state_key: format!("{prefix}state"),
            members_prefix: format!("{prefix}members/"),
            unreadable: Default::default(),
        })
    }

    /// A lease of `ttl`.
    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let mut c = self.client.clone();
        Ok(within(self.timeout, c.lease_grant(ttl.as_secs() as i64, None)).await?.id())
    }

    /// Keeps `lease` alive once; its remaining TTL (0: expired). One
    /// deadline for the whole exchange (`timeout`, at most half the TTL:
    /// a failed keep-alive leaves time for another).
    pub(crate) async fn keep_alive(&self, lease: i64) -> Result<i64, StoreError> {
        let mut c = self.client.clone();
        let once = async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        match within(self.timeout, once).await? {
            Some(r) => Ok(r.ttl()),
            None => Err(StoreError::Invalid("the keep-alive stream ended".into())),
        }
    }

    /// Gives `lease` back (its keys go at once).
    pub(crate) async fn revoke(&self, lease: i64) {
        let mut c = self.client.clone();
        let _ = within(self.timeout, c.lease_revoke(lease)).await;
    }

    /// Tries to become the leader with `lease`: `Ok(Some(term))` when this
    /// replica is (or already was, with this lease) the leader.
    pub(crate) async fn campaign(&self, id: &str, lease: i64) -> Result<Option<i64>, StoreError> {
        let mut c = self.client.clone();
        let key = self.leader_key.as_str();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, id, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let resp = within(self.timeout, c.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| h.revision()));
        }
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                if let Some(kv) = g.kvs().first() {
                    if kv.lease() == lease && kv.value() == id.as_bytes() {
                        return Ok(Some(kv.create_revision()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The current leader's id and term, if any.
    pub(crate) async fn leader(&self) -> Result<Option<(String, i64)>, StoreError> {
        let mut c = self.client.clone();
        let resp = within(self.timeout, c.get(self.leader_key.as_str(), None)).await?;
        Ok(resp.kvs().first().map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.create_revision())))
    }

    /// The committed state, read linearizably.
    pub(crate) async fn state(&self) -> Result<Versioned, StoreError> {
        self.read_state().await.map(|(doc, rev, _)| (doc, rev))
    }

    /// [`Store::state`], and the store's revision at the read: nothing
    /// changed the state between the two, so a watch from the next one
    /// misses nothing (and starts above any compaction, which the state's
    /// own revision, older when the rollout is idle, may not).
    pub(crate) async fn read_state(&self) -> Result<(Option<Committed>, i64, i64), StoreError> {
        let mut c = self.client.clone();
        let resp = within(self.timeout, c.get(self.state_key.as_str(), None)).await?;
        let at = resp.header().map_or(0, |h| h.revision());
        match resp.kvs().first() {
            Some(kv) => Ok((Some(parse_state(kv.value())?), kv.mod_revision(), at.max(kv.mod_revision()))),
            None => Ok((None, 0, at)),
        }
    }

    /// Gives up leading `term` (this replica's config cannot run the
    /// committed rollout while another's can): deletes the leader key if it
    /// is still that term's, so that another replica leads at once.
    pub(crate) async fn resign(&self, term: i64) -> Result<(), StoreError> {
        let key = self.leader_key.as_str();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, term)])
            .and_then([TxnOp::delete(key, None)]);
        let mut c = self.client.clone();
        within(self.timeout, c.txn(txn)).await?;
        Ok(())
    }

    /// Commits `doc` if the state is still at revision `prev` and (with
    /// `term`) the writer still leads that term: one transaction, so a
    /// replaced or paused leader can never commit. The new revision.
    pub(crate) async fn commit(
        &self,
        term: Option<i64>,
        prev: i64,
        doc: &Committed,
    ) -> Result<Result<i64, Refused>, StoreError> {
        let bytes = doc.to_json().map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut when = vec![Compare::mod_revision(self.state_key.as_str(), CompareOp::Equal, prev)];
        if let Some(term) = term {
            when.push(Compare::create_revision(self.leader_key.as_str(), CompareOp::Equal, term));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::put(self.state_key.as_str(), bytes, None)])
            .or_else([TxnOp::get(self.state_key.as_str(), None), TxnOp::get(self.leader_key.as_str(), None)]);
        let mut c = self.client.clone();
        let resp = within(self.timeout, c.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map_or(0, |h| h.revision())));
        }
        let ops = resp.op_responses();
        let leads = match (term, ops.get(1)) {
            (None, _) => true,
            (Some(term), Some(TxnOpResponse::Get(g))) => g.kvs().first().is_some_and(|kv| kv.create_revision() == term),
            _ => false,
        };
        Ok(Err(if leads { Refused::Moved } else { Refused::NotLeader }))
    }

    /// Publishes this replica's report under its lease.
    pub(crate) async fn report(&self, lease: i64, report: &MemberReport) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(report).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let key = format!("{}{}", self.members_prefix, report.id);
        let mut c = self.client.clone();
        within(self.timeout, c.put(key, bytes, Some(PutOptions::new().with_lease(lease)))).await?;
        Ok(())
    }

    /// Every live member's latest report (unreadable ones are skipped, and
    /// logged once per key: a replica of another weir version, say).
    pub(crate) async fn members(&self) -> Result<Vec<MemberReport>, StoreError> {
        let mut c = self.client.clone();
        let resp =
            within(self.timeout, c.get(self.members_prefix.as_str(), Some(GetOptions::new().with_prefix()))).await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            match serde_json::from_slice(kv.value()) {
                Ok(m) => out.push(m),
                Err(e) => {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let mut told = self.unreadable.lock().unwrap_or_else(|p| p.into_inner());
                    if told.insert(key.clone()) {
                        tracing::error!(key = %key, "fleet: a member's report is unreadable, left out: {e}");
                    }
                }
            }
        }
        Ok(out)
    }

    /// Watches the state key from revision `from`.
    pub(crate) async fn watch_state(&self, from: i64) -> Result<WatchStream, StoreError> {
        let mut c = self.client.clone();
        let opts = WatchOptions::new().with_start_revision(from).with_progress_notify();
        within(self.timeout, c.watch(self.state_key.as_str(), Some(opts))).await
    }
}

/// Reads a committed state document.
pub(crate) fn parse_state(bytes: &[u8]) -> Result<Committed, StoreError> {
    Committed::from_json(bytes).map_err(|e| StoreError::Invalid(format!("the committed state is not valid: {e}")))
}

async fn within<T>(timeout: Duration, f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}
