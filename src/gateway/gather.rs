//! Requests about every partition, in a gateway group: asked of every owner (this
//! gateway's own part run here), their answers merged.
//!
//! A listing is merged by id: each owner answers the newest `page_size` of its own
//! operations older than the page token, so the newest `page_size` of them all are
//! the page, and the last id on it is the next token. Ids are UUIDv7s, ordered by
//! creation time across gateways, so a token means the same to every gateway and
//! survives a rebalance. A batch's members, and the queued jobs a purge cancels, are
//! added up over the owners.
//!
//! Every partition must have a reachable owner: while one has none (a rebalance, an
//! owner killed), the request waits up to [`PATIENCE`], then is `503`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::app::GatewayState;
use super::batches::BatchStatus;
use super::cluster::{Cluster, LocalOnly, Owner};
use super::peer::{moved, request, send, PATIENCE};
use super::ApiError;

/// Which gathering request.
pub(super) enum Gather {
    List,
    Batch(String),
    Purge,
}

/// Asks every owner, merges their answers.
pub(super) async fn gather(app: &Arc<GatewayState>, cluster: &Arc<Cluster>, what: Gather, parts: Parts, body: Bytes, next: Next) -> Response {
    let give_up = Instant::now() + PATIENCE;
    loop {
        match ask_all(app, cluster, &parts, &body, &next).await {
            Ok(answers) => {
                app.metrics.gathered.inc();
                // A refusal (a bad query, a rate limit) goes back as its owner gave it.
                let (refused, answers): (Vec<Response>, Vec<Response>) =
                    answers.into_iter().partition(|r| !r.status().is_success() && r.status() != StatusCode::NOT_FOUND);
                if let Some(refused) = refused.into_iter().next() {
                    return refused;
                }
                let mut found = Vec::new();
                for answer in answers.into_iter().filter(|r| r.status().is_success()) {
                    let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX).await.unwrap_or_default();
                    found.push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                }
                return match what {
                    Gather::List => Json(merge_pages(&parts, found)).into_response(),
                    Gather::Batch(id) => match merge_batches(&id, &found) {
                        Some(b) => Json(b).into_response(),
                        None => ApiError::not_found(format!("batches/{id}")).into_response(),
                    },
                    Gather::Purge => {
                        let removed: u64 = found.iter().filter_map(|v| v["removed"].as_u64()).sum();
                        Json(json!({ "removed": removed, "status": "completed" })).into_response()
                    }
                };
            }
            Err(missing) if Instant::now() >= give_up => {
                let message = format!("no reachable gateway owns status partitions {missing:?} right now; retry shortly");
                let mut response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_owner", message).into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
            Err(_) => {
                cluster.refresh(Duration::from_millis(200)).await;
                cluster.changed(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Every owner's answer, or the partitions that had none.
async fn ask_all(app: &GatewayState, cluster: &Arc<Cluster>, parts: &Parts, body: &Bytes, next: &Next) -> Result<Vec<Response>, Vec<i32>> {
    let mut peers: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut mine = false;
    let mut missing = Vec::new();
    for (p, owner) in cluster.owners() {
        match owner {
            Owner::Me => mine = true,
            Owner::Peer(url) => peers.entry(url).or_default().push(p),
            Owner::Warming | Owner::Nobody => missing.push(p),
        }
    }
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(missing);
    }
    let uri = parts.uri.to_string();
    let local = async {
        if !mine {
            return None;
        }
        let mut req = request(parts, &uri, body, None);
        req.extensions_mut().insert(LocalOnly { cluster: cluster.clone(), owned: cluster.ready() });
        Some(next.clone().run(req).await)
    };
    let remote = futures::future::join_all(peers.keys().map(|url| send(&app.peers, url, request(parts, &uri, body, Some(cluster.me())), PATIENCE)));
    let (local, remote) = tokio::join!(local, remote);
    let mut responses: Vec<Response> = local.into_iter().collect();
    let mut failed = Vec::new();
    for (answer, (url, owned)) in remote.into_iter().zip(&peers) {
        match answer {
            Ok(response) if !moved(&response) => responses.push(response),
            Ok(_) => failed.extend(owned),
            Err(e) => {
                tracing::info!(peer = %url, error = %e, "gateway peer unreachable while gathering");
                failed.extend(owned);
            }
        }
    }
    if !failed.is_empty() {
        return Err(failed);
    }
    Ok(responses)
}

/// The newest `page_size` operations of all the owners' pages, and the token after them.
fn merge_pages(parts: &Parts, pages: Vec<Value>) -> Value {
    let size = super::routes::page_size(parts.uri.query().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("page_size="))).and_then(|n| n.parse().ok()));
    let mut more = false;
    let mut all: Vec<(uuid::Uuid, Value)> = Vec::new();
    for mut page in pages {
        more |= page["next_page_token"].as_str().is_some_and(|t| !t.is_empty());
        if let Value::Array(ops) = page["operations"].take() {
            all.extend(ops.into_iter().filter_map(|op| Some((op["name"].as_str()?.strip_prefix("operations/")?.parse().ok()?, op))));
        }
    }
    all.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    more |= all.len() > size;
    all.truncate(size);
    let next = if more { all.last().map(|(id, _)| super::routes::encode_page_token(*id)).unwrap_or_default() } else { String::new() };
    json!({ "operations": all.into_iter().map(|(_, op)| op).collect::<Vec<_>>(), "next_page_token": next })
}

/// One batch's counts, summed over the owners' parts of it; `None` if none knows it.
fn merge_batches(id: &str, parts: &[Value]) -> Option<BatchStatus> {
    let count = |field: &str| parts.iter().filter_map(|v| v[field].as_u64()).sum::<u64>() as usize;
    let total = count("total");
    (total > 0).then(|| {
        BatchStatus::from_counts(id, total, count("completed"), count("failed"), count("cancelled"), count("timed_out"), count("in_queue"), count("in_progress"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request;

    fn op(id: uuid::Uuid) -> Value {
        json!({ "name": format!("operations/{id}") })
    }

    #[test]
    fn pages_merge_newest_first_with_a_token_when_more_remain() {
        let ids: Vec<uuid::Uuid> = (0..6).map(|_| crate::envelope::new_id()).collect();
        let (parts, _) = Request::builder().uri("/v1/operations?page_size=3").body(()).unwrap().into_parts();
        let a = json!({ "operations": [op(ids[5]), op(ids[2]), op(ids[0])], "next_page_token": "" });
        let b = json!({ "operations": [op(ids[4]), op(ids[3])], "next_page_token": "" });
        let merged = merge_pages(&parts, vec![a, b]);
        let names: Vec<&str> = merged["operations"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names, [5, 4, 3].map(|i| format!("operations/{}", ids[i])));
        assert_eq!(merged["next_page_token"], super::super::routes::encode_page_token(ids[3]));
        let last = merge_pages(&parts, vec![json!({ "operations": [op(ids[1])], "next_page_token": "" })]);
        assert_eq!(last["next_page_token"], "");
    }

    #[test]
    fn batch_counts_add_up_over_owners() {
        let part = |completed: u64, in_queue: u64| json!({ "total": completed + in_queue, "completed": completed, "in_queue": in_queue });
        let b = merge_batches("b", &[part(2, 0), part(1, 1)]).unwrap();
        assert_eq!((b.total, b.completed, b.in_queue, b.state), (4, 3, 1, "IN_PROGRESS"));
        assert!(merge_batches("b", &[]).is_none());
    }
}
