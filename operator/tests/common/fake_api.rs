//! A small in-memory Kubernetes API behind a real `kube::Client` (over
//! `tower_test::mock::pair`), answering what the operator sends: PhoneNumbers (JSON
//! patches for the finalizer, server-side apply of status), Events (events.k8s.io) and
//! Leases (create, get, replace with resourceVersion checks). It plays the watch too:
//! every change to a PhoneNumber is applied to a reflector store, as a watch would.
//!
//! Every request is recorded so tests can assert what the operator sent.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};
use switchyard_routing::{PhoneNumber, PhoneNumberSpec};
use tokio::sync::{mpsc, watch};

type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// An answer: a JSON document, or a watch stream of events.
enum Reply {
    Json(u16, Value),
    Watch(mpsc::UnboundedReceiver<Bytes>),
}

impl From<(u16, Value)> for Reply {
    fn from((code, value): (u16, Value)) -> Self {
        Reply::Json(code, value)
    }
}

/// One request the operator made.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

struct State {
    objects: BTreeMap<String, Value>,
    resource_version: u64,
    log: Vec<Recorded>,
    writer: Writer<PhoneNumber>,
    /// Requests whose path contains the text are answered with the status code.
    failures: Vec<(String, u16)>,
    /// After the next Lease read, another replica writes the Lease as this holder.
    race_after_lease_read: Option<String>,
    /// Every PhoneNumber watch event: (resourceVersion, namespace, event JSON line).
    history: Vec<(u64, String, Bytes)>,
    /// Open watches: (namespace or all, stream).
    watches: Vec<(Option<String>, mpsc::UnboundedSender<Bytes>)>,
    /// Bumped on every PhoneNumber change, so tests can wait for one.
    changes: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    store: Store<PhoneNumber>,
    changes: watch::Receiver<u64>,
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn key(resource: &str, namespace: &str, name: &str) -> String {
    format!("{resource}/{namespace}/{name}")
}

impl FakeApi {
    fn new() -> FakeApi {
        let (changes, changes_rx) = watch::channel(0);
        let (store, mut writer) = reflector::store::<PhoneNumber>();
        // An empty, complete first list: the cache is ready.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        FakeApi {
            state: Arc::new(Mutex::new(State {
                objects: BTreeMap::new(),
                resource_version: 1,
                log: Vec::new(),
                writer,
                failures: Vec::new(),
                race_after_lease_read: None,
                history: Vec::new(),
                watches: Vec::new(),
                changes,
            })),
            store,
            changes: changes_rx,
        }
    }

    /// Starts the fake in-process and returns a client talking to it.
    pub fn start() -> (kube::Client, FakeApi) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<Body>, Response<ResponseBody>>();
        let api = FakeApi::new();
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                send.send_response(server.respond(&parts, &bytes));
            }
        });
        let client = kube::Client::new(service, "default");
        (client, api)
    }

    /// Starts the fake as a plain-HTTP API server on 127.0.0.1, for tests that run the
    /// operator binary with a kubeconfig pointing at it.
    pub async fn start_http() -> (std::net::SocketAddr, FakeApi) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let api = FakeApi::new();
        let server = api.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let server = server.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, std::convert::Infallible>(server.respond(&parts, &bytes))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, api)
    }

    fn respond(&self, parts: &http::request::Parts, bytes: &[u8]) -> Response<ResponseBody> {
        let recorded = Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: serde_json::from_slice(bytes).unwrap_or(Value::Null),
        };
        let (code, body) = match self.answer(&recorded) {
            Reply::Json(code, value) => {
                let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
                (
                    code,
                    Full::new(bytes)
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
            }
            Reply::Watch(rx) => {
                let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|line| (Ok::<_, std::io::Error>(Frame::data(line)), rx))
                });
                (200, StreamBody::new(frames).boxed_unsync())
            }
        };
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(body)
            .expect("a valid response")
    }

    /// The watch cache this fake keeps up to date.
    pub fn store(&self) -> Store<PhoneNumber> {
        self.store.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Answers requests whose path contains `path_part` with `code` until cleared.
    pub fn fail(&self, path_part: &str, code: u16) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push((path_part.into(), code));
    }

    /// Simulates another replica writing (or creating) the Lease as `holder` right after
    /// the next read of it, so the reader's write is refused with 409.
    pub fn race_after_next_lease_read(&self, holder: &str) {
        self.state.lock().unwrap().race_after_lease_read = Some(holder.into());
    }

    pub fn clear_failures(&self) {
        self.state.lock().unwrap().failures.clear();
    }

    fn next_version(state: &mut State) -> String {
        state.resource_version += 1;
        state.resource_version.to_string()
    }

    /// A PhoneNumber changed: update the test's store, and tell every open watch.
    fn sync_store(state: &mut State, value: &Value, deleted: bool) {
        let pn: PhoneNumber =
            serde_json::from_value(value.clone()).expect("the fake holds valid PhoneNumbers");
        let event = if deleted {
            watcher::Event::Delete(pn)
        } else {
            watcher::Event::Apply(pn)
        };
        state.writer.apply_watcher_event(&event);

        let kind = if deleted { "DELETED" } else { "MODIFIED" };
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": value})).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        let namespace = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        state.watches.retain(|(scope, tx)| {
            if scope.as_ref().is_some_and(|s| *s != namespace) {
                return !tx.is_closed();
            }
            tx.send(line.clone()).is_ok()
        });
        let rv = state.resource_version;
        state.history.push((rv, namespace, line));
        state.changes.send_modify(|n| *n += 1);
    }

    /// Waits until `done` holds, checking after every PhoneNumber change and at least
    /// every 50 ms (for conditions on Redis). Panics after `within`.
    pub async fn wait_until<F, Fut>(&self, within: std::time::Duration, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut changes = self.changes.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done().await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("not within {within:?}: {what}");
            }
            let tick = tokio::time::sleep(std::time::Duration::from_millis(50));
            tokio::select! {
                _ = changes.changed() => {}
                () = tick => {}
            }
        }
    }

    fn list_or_watch(state: &mut State, namespace: Option<&str>, query: &str) -> Reply {
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        let in_scope = |ns: &str| namespace.is_none_or(|n| n == ns);
        if param("watch").as_deref() == Some("true") {
            let since: u64 = param("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (tx, rx) = mpsc::unbounded_channel();
            for (rv, ns, line) in &state.history {
                if *rv > since && in_scope(ns) {
                    let _ = tx.send(line.clone());
                }
            }
            state.watches.push((namespace.map(str::to_string), tx));
            return Reply::Watch(rx);
        }
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(k, v)| {
                k.starts_with("phonenumbers/")
                    && in_scope(v["metadata"]["namespace"].as_str().unwrap_or_default())
            })
            .map(|(_, v)| v.clone())
            .collect();
        Reply::Json(
            200,
            json!({
                "apiVersion": "switchyard.dev/v1alpha1",
                "kind": "PhoneNumberList",
                "metadata": {"resourceVersion": state.resource_version.to_string()},
                "items": items,
            }),
        )
    }

    /// Creates a PhoneNumber as the API server would (uid, generation 1, timestamps).
    pub fn create(&self, namespace: &str, name: &str, created_second: i64, spec: PhoneNumberSpec) {
        let mut state = self.state.lock().unwrap();
        let rv = Self::next_version(&mut state);
        let created = Timestamp::from_second(created_second).unwrap().to_string();
        let value = json!({
            "apiVersion": "switchyard.dev/v1alpha1",
            "kind": "PhoneNumber",
            "metadata": {
                "name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"),
                "generation": 1, "resourceVersion": rv, "creationTimestamp": created,
            },
            "spec": spec,
        });
        Self::sync_store(&mut state, &value, false);
        state
            .objects
            .insert(key("phonenumbers", namespace, name), value);
    }

    /// Changes the spec (a new generation).
    pub fn update_spec(&self, namespace: &str, name: &str, spec: PhoneNumberSpec) {
        let mut state = self.state.lock().unwrap();
        let rv = Self::next_version(&mut state);
        let mut value = state.objects[&key("phonenumbers", namespace, name)].clone();
        value["spec"] = serde_json::to_value(spec).unwrap();
        let generation = value["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        value["metadata"]["generation"] = json!(generation);
        value["metadata"]["resourceVersion"] = json!(rv);
        Self::sync_store(&mut state, &value, false);
        state
            .objects
            .insert(key("phonenumbers", namespace, name), value);
    }

    /// `kubectl delete`: with finalizers the object stays, marked for deletion.
    pub fn delete(&self, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        let k = key("phonenumbers", namespace, name);
        let mut value = state.objects[&k].clone();
        let has_finalizers = value["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            let rv = Self::next_version(&mut state);
            value["metadata"]["deletionTimestamp"] = json!(Timestamp::now().to_string());
            value["metadata"]["resourceVersion"] = json!(rv);
            Self::sync_store(&mut state, &value, false);
            state.objects.insert(k, value);
        } else {
            Self::sync_store(&mut state, &value, true);
            state.objects.remove(&k);
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<PhoneNumber> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&key("phonenumbers", namespace, name))
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    /// Another replica takes the Lease (a write the operator did not make).
    pub fn steal_lease(&self, namespace: &str, name: &str, holder: &str) {
        let mut state = self.state.lock().unwrap();
        let rv = Self::next_version(&mut state);
        let k = key("leases", namespace, name);
        let mut value = state.objects[&k].clone();
        value["spec"]["holderIdentity"] = json!(holder);
        value["spec"]["renewTime"] = json!(Timestamp::now().to_string());
        value["metadata"]["resourceVersion"] = json!(rv);
        state.objects.insert(k, value);
    }

    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&key("leases", namespace, name))
            .cloned()
    }

    fn answer(&self, request: &Recorded) -> Reply {
        let mut state = self.state.lock().unwrap();
        state.log.push(request.clone());
        if let Some((_, code)) = state
            .failures
            .iter()
            .find(|(part, _)| request.path.contains(part.as_str()))
        {
            return status(*code, "InternalError", "injected failure").into();
        }
        let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        // apis/<group>/<version>/phonenumbers: a list or watch in all namespaces
        if let ["apis", _, _, "phonenumbers"] = segments.as_slice() {
            return Self::list_or_watch(&mut state, None, &request.query);
        }
        // apis/<group>/<version>/namespaces/<ns>/<resource>[/<name>[/<subresource>]]
        let (resource, namespace, name, sub) = match segments.as_slice() {
            ["apis", _, _, "namespaces", ns, resource] => (*resource, *ns, None, None),
            ["apis", _, _, "namespaces", ns, resource, name] => (*resource, *ns, Some(*name), None),
            ["apis", _, _, "namespaces", ns, resource, name, sub] => {
                (*resource, *ns, Some(*name), Some(*sub))
            }
            _ => return status(404, "NotFound", "no such path in the fake").into(),
        };
        let method = request.method.as_str();
        if (resource, name, method) == ("phonenumbers", None, "GET") {
            return Self::list_or_watch(&mut state, Some(namespace), &request.query);
        }
        let mut json_reply = || -> (u16, Value) {
            match (resource, name, sub, method) {
                ("events", None, None, "POST") => (201, request.body.clone()),
                ("events", Some(_), None, "PATCH") => (200, request.body.clone()),
                ("leases", None, None, "POST") => {
                    let name = request.body["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default();
                    let k = key("leases", namespace, name);
                    if state.objects.contains_key(&k) {
                        return status(409, "AlreadyExists", "lease exists");
                    }
                    let rv = Self::next_version(&mut state);
                    let mut value = request.body.clone();
                    value["metadata"]["resourceVersion"] = json!(rv);
                    state.objects.insert(k, value.clone());
                    (201, value)
                }
                ("leases", Some(name), None, "GET") => {
                    let k = key("leases", namespace, name);
                    let Some(value) = state.objects.get(&k).cloned() else {
                        if let Some(holder) = state.race_after_lease_read.take() {
                            // Another replica creates the Lease right after our read.
                            let rv = Self::next_version(&mut state);
                            let created = json!({
                                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
                                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                                         "renewTime": Timestamp::now().to_string(), "leaseTransitions": 0},
                            });
                            state.objects.insert(k, created);
                        }
                        return status(404, "NotFound", "no such lease");
                    };
                    if let Some(holder) = state.race_after_lease_read.take() {
                        let rv = Self::next_version(&mut state);
                        let mut raced = value.clone();
                        raced["spec"]["holderIdentity"] = json!(holder);
                        raced["spec"]["renewTime"] = json!(Timestamp::now().to_string());
                        raced["metadata"]["resourceVersion"] = json!(rv);
                        state.objects.insert(k, raced);
                    }
                    (200, value)
                }
                ("leases", Some(name), None, "PUT") => {
                    let k = key("leases", namespace, name);
                    let Some(current) = state.objects.get(&k) else {
                        return status(404, "NotFound", "no such lease");
                    };
                    if request.body["metadata"]["resourceVersion"]
                        != current["metadata"]["resourceVersion"]
                    {
                        return status(409, "Conflict", "the lease was modified");
                    }
                    let rv = Self::next_version(&mut state);
                    let mut value = request.body.clone();
                    value["metadata"]["resourceVersion"] = json!(rv);
                    state.objects.insert(k, value.clone());
                    (200, value)
                }
                ("phonenumbers", Some(name), None, "PATCH") => {
                    let k = key("phonenumbers", namespace, name);
                    let Some(mut value) = state.objects.get(&k).cloned() else {
                        return status(404, "NotFound", "no such PhoneNumber");
                    };
                    let Ok(patch) =
                        serde_json::from_value::<json_patch::Patch>(request.body.clone())
                    else {
                        return status(415, "UnsupportedMediaType", "only JSON patches here");
                    };
                    // The API server (evanphx/json-patch) treats a missing member as null for
                    // `test`, which kube's finalizer patch relies on.
                    if value["metadata"].get("finalizers").is_none() {
                        value["metadata"]["finalizers"] = Value::Null;
                    }
                    if json_patch::patch(&mut value, &patch).is_err() {
                        return status(422, "Invalid", "the JSON patch test failed");
                    }
                    if value["metadata"]["finalizers"].is_null()
                        && let Some(meta) = value["metadata"].as_object_mut()
                    {
                        meta.remove("finalizers");
                    }
                    let rv = Self::next_version(&mut state);
                    value["metadata"]["resourceVersion"] = json!(rv);
                    let released = value["metadata"]["deletionTimestamp"].is_string()
                        && value["metadata"]["finalizers"]
                            .as_array()
                            .is_none_or(|f| f.is_empty());
                    Self::sync_store(&mut state, &value, released);
                    if released {
                        state.objects.remove(&k);
                    } else {
                        state.objects.insert(k, value.clone());
                    }
                    (200, value)
                }
                ("phonenumbers", Some(name), Some("status"), "PATCH") => {
                    let k = key("phonenumbers", namespace, name);
                    let Some(mut value) = state.objects.get(&k).cloned() else {
                        return status(404, "NotFound", "no such PhoneNumber");
                    };
                    // The operator is the only manager of status here: apply replaces it.
                    value["status"] = request.body["status"].clone();
                    let rv = Self::next_version(&mut state);
                    value["metadata"]["resourceVersion"] = json!(rv);
                    Self::sync_store(&mut state, &value, false);
                    state.objects.insert(k, value.clone());
                    (200, value)
                }
                _ => status(404, "NotFound", "not handled by the fake"),
            }
        };
        json_reply().into()
    }
}
