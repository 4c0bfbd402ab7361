//! `Api<T>`: the verbs on one kind, typed with its k8s-openapi type.

use crate::params::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use crate::{Client, Error, JSON, resource_path, with_query};
use futures::{Stream, StreamExt};
use hyper::Method;
use podd_api::k8s_openapi::api::autoscaling::v1::Scale;
use podd_api::{List, Object, Status, WatchEventType};
use std::marker::PhantomData;
use std::pin::Pin;

/// Typed operations on one kind, in one namespace (or all, or cluster-scoped).
pub struct Api<T> {
    client: Client,
    ns: Option<String>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Api<T> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            ns: self.ns.clone(),
            _t: PhantomData,
        }
    }
}

/// One event of a watch: ADDED, MODIFIED, DELETED, or BOOKMARK (an object carrying only a
/// resourceVersion). ERROR events end up as `Err(Error::Api(status))`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent<T> {
    pub kind: WatchEventType,
    pub object: T,
}

pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<WatchEvent<T>, Error>> + Send>>;

/// What a delete answered: the object (as it was, or still terminating with its
/// `deletionTimestamp` set), or a Success Status when it is gone and the server says no more.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted<T> {
    Object(T),
    Gone(Box<Status>),
}

impl<T> Deleted<T> {
    pub fn object(self) -> Option<T> {
        match self {
            Deleted::Object(o) => Some(o),
            Deleted::Gone(_) => None,
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Decode(e.to_string()))
}

fn append(path: String, q: &[(&'static str, String)]) -> String {
    with_query(path, q)
}

/// The wire line `{"type":..,"object":..}` of a watch.
#[derive(serde::Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: WatchEventType,
    object: serde_json::Value,
}

/// Decodes one watch line; an ERROR event becomes the error its Status names.
fn decode_event<T: Object>(line: &[u8]) -> Result<WatchEvent<T>, Error> {
    let raw: RawEvent = serde_json::from_slice(line)
        .map_err(|e| Error::Decode(format!("watch event of {}: {e}", T::KIND)))?;
    if raw.kind == WatchEventType::Error {
        let st: Status = serde_json::from_value(raw.object)
            .map_err(|e| Error::Decode(format!("watch ERROR event: {e}")))?;
        return Err(Error::Api(Box::new(st)));
    }
    let object: T = serde_json::from_value(raw.object).map_err(|e| {
        Error::Decode(format!(
            "{} event object of {}: {e}",
            raw.kind.as_str(),
            T::KIND
        ))
    })?;
    Ok(WatchEvent {
        kind: raw.kind,
        object,
    })
}

impl<T: Object> Api<T> {
    pub(crate) fn new(client: Client, ns: Option<&str>) -> Api<T> {
        Api {
            client,
            ns: ns.map(String::from),
            _t: PhantomData,
        }
    }

    /// The namespace a write goes to: the handle's, else the object's, else `default`.
    fn ns_for_write(&self, obj: Option<&T>) -> Option<String> {
        if !T::API_KIND.namespaced() {
            return None;
        }
        self.ns
            .clone()
            .or_else(|| obj.and_then(|o| o.metadata().namespace.clone()))
            .filter(|n| !n.is_empty())
            .or_else(|| Some("default".into()))
    }

    fn path(&self, ns: Option<&str>, name: Option<&str>) -> String {
        resource_path(T::API_KIND, ns, name)
    }

    fn object_path(&self, name: &str, sub: Option<&str>) -> String {
        let ns = self.ns_for_write(None);
        let mut p = self.path(ns.as_deref(), Some(name));
        if let Some(s) = sub {
            p.push('/');
            p.push_str(s);
        }
        p
    }

    fn name_of(obj: &T) -> Result<&str, Error> {
        obj.metadata()
            .name
            .as_deref()
            .ok_or_else(|| Error::Decode(format!("the {} has no metadata.name", T::KIND)))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn namespace(&self) -> Option<&str> {
        self.ns.as_deref()
    }

    pub async fn get(&self, name: &str) -> Result<T, Error> {
        let p = self.object_path(name, None);
        self.client.request(Method::GET, &p, None, JSON).await
    }

    /// Like `get`, but None when the object does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<T>, Error> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One list (one page when `lp.limit` is set; `metadata.continue` then names the next).
    pub async fn list(&self, lp: &ListParams) -> Result<List<T>, Error> {
        let path = with_query(self.path(self.ns.as_deref(), None), &lp.query());
        self.client.request(Method::GET, &path, None, JSON).await
    }

    pub async fn create(&self, obj: &T) -> Result<T, Error> {
        self.create_with(obj, &PostParams::default()).await
    }

    pub async fn create_with(&self, obj: &T, pp: &PostParams) -> Result<T, Error> {
        let ns = self.ns_for_write(Some(obj));
        let p = append(self.path(ns.as_deref(), None), &pp.query());
        self.client
            .request(Method::POST, &p, Some(to_json(obj)?), JSON)
            .await
    }

    /// Replaces the object; fails with 409 if its resourceVersion is not the stored one.
    pub async fn update(&self, obj: &T) -> Result<T, Error> {
        self.update_with(obj, &PostParams::default()).await
    }

    pub async fn update_with(&self, obj: &T, pp: &PostParams) -> Result<T, Error> {
        let ns = self.ns_for_write(Some(obj));
        let p = self.path(ns.as_deref(), Some(Self::name_of(obj)?));
        let p = append(p, &pp.query());
        self.client
            .request(Method::PUT, &p, Some(to_json(obj)?), JSON)
            .await
    }

    /// Replaces the object's status.
    pub async fn update_status(&self, obj: &T) -> Result<T, Error> {
        let ns = self.ns_for_write(Some(obj));
        let p = format!(
            "{}/status",
            self.path(ns.as_deref(), Some(Self::name_of(obj)?))
        );
        self.client
            .request(Method::PUT, &p, Some(to_json(obj)?), JSON)
            .await
    }

    /// Applies a JSON merge patch (lists are replaced whole; use `patch_with` and
    /// `Patch::strategic` to merge lists by key).
    pub async fn patch(&self, name: &str, patch: &serde_json::Value) -> Result<T, Error> {
        self.patch_with(name, &Patch::merge(patch.clone()), &PatchParams::default())
            .await
    }

    /// Applies a JSON merge patch to the status.
    pub async fn patch_status(&self, name: &str, patch: &serde_json::Value) -> Result<T, Error> {
        self.patch_subresource(
            name,
            "status",
            &Patch::merge(patch.clone()),
            &PatchParams::default(),
        )
        .await
    }

    /// Applies a patch of any type (merge, strategic, JSON, server-side apply).
    pub async fn patch_with(
        &self,
        name: &str,
        patch: &Patch,
        pp: &PatchParams,
    ) -> Result<T, Error> {
        let p = append(self.object_path(name, None), &pp.query());
        self.send_patch(&p, patch).await
    }

    /// Applies a patch to a subresource (`status`).
    pub async fn patch_subresource(
        &self,
        name: &str,
        sub: &str,
        patch: &Patch,
        pp: &PatchParams,
    ) -> Result<T, Error> {
        let p = append(self.object_path(name, Some(sub)), &pp.query());
        self.send_patch(&p, patch).await
    }

    async fn send_patch<R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        patch: &Patch,
    ) -> Result<R, Error> {
        self.client
            .request(
                Method::PATCH,
                path,
                Some(to_json(&patch.body)?),
                patch.content_type(),
            )
            .await
    }

    /// Deletes the object with the server's default propagation (Background: what it owns
    /// goes too).
    pub async fn delete(&self, name: &str) -> Result<Deleted<T>, Error> {
        self.delete_with(name, &DeleteParams::default()).await
    }

    /// Deletes with DeleteOptions: propagationPolicy, gracePeriodSeconds, preconditions,
    /// dryRun.
    pub async fn delete_with(&self, name: &str, dp: &DeleteParams) -> Result<Deleted<T>, Error> {
        let p = self.object_path(name, None);
        let body = to_json(&dp.options())?;
        let v: serde_json::Value = self
            .client
            .request(Method::DELETE, &p, Some(body), JSON)
            .await?;
        if v.get("kind").and_then(|k| k.as_str()) == Some("Status") {
            let st: Status = serde_json::from_value(v)
                .map_err(|e| Error::Decode(format!("delete of {name}: {e}")))?;
            return Ok(Deleted::Gone(Box::new(st)));
        }
        serde_json::from_value(v)
            .map(Deleted::Object)
            .map_err(|e| Error::Decode(format!("delete of {name}: {e}")))
    }

    /// Reads the scale subresource (Deployments, ReplicaSets).
    pub async fn get_scale(&self, name: &str) -> Result<Scale, Error> {
        let p = self.object_path(name, Some("scale"));
        self.client.request(Method::GET, &p, None, JSON).await
    }

    /// Sets the replicas through the scale subresource, as `kubectl scale` does (a merge
    /// patch of `spec.replicas`).
    pub async fn scale(&self, name: &str, replicas: u32) -> Result<Scale, Error> {
        let p = self.object_path(name, Some("scale"));
        let patch = Patch::merge(serde_json::json!({"spec": {"replicas": replicas}}));
        self.send_patch(&p, &patch).await
    }

    /// Events after `resource_version` ("0" or "": the current objects as ADDED first). A
    /// compacted version fails with a 410 error; so does an ERROR event in the stream.
    pub async fn watch(
        &self,
        lp: &ListParams,
        resource_version: &str,
    ) -> Result<EventStream<T>, Error> {
        let mut q = lp.query();
        q.push(("watch", "true".into()));
        q.push(("resourceVersion", resource_version.to_string()));
        if lp.allow_bookmarks {
            q.push(("allowWatchBookmarks", "true".into()));
        }
        let path = with_query(self.path(self.ns.as_deref(), None), &q);
        let lines = self.client.stream_lines(&path).await?;
        Ok(lines.map(|line| decode_event::<T>(&line?)).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podd_api::Pod;

    #[test]
    fn watch_lines_decode() {
        let ev: WatchEvent<Pod> = decode_event(
            br#"{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","resourceVersion":"5"}}}"#,
        )
        .unwrap();
        assert_eq!(ev.kind, WatchEventType::Added);
        assert_eq!(ev.object.metadata.name.as_deref(), Some("a"));

        let ev: WatchEvent<Pod> = decode_event(
            br#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"12"}}}"#,
        )
        .unwrap();
        assert_eq!(ev.kind, WatchEventType::Bookmark);
        assert_eq!(ev.object.metadata.resource_version.as_deref(), Some("12"));

        let err = decode_event::<Pod>(
            br#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 1 (40)","reason":"Expired","code":410}}"#,
        )
        .unwrap_err();
        assert!(err.is_expired());
        assert!(
            err.to_string().contains("too old resource version"),
            "{err}"
        );
        assert_eq!(err.reason(), Some("Expired"));
    }

    #[test]
    fn delete_options_body() {
        let o = DeleteParams {
            grace_period_seconds: Some(0),
            precondition_uid: Some("u1".into()),
            ..DeleteParams::orphan()
        }
        .options();
        let v = serde_json::to_value(o).unwrap();
        assert_eq!(v["propagationPolicy"], "Orphan");
        assert_eq!(v["gracePeriodSeconds"], 0);
        assert_eq!(v["preconditions"]["uid"], "u1");
        assert_eq!(v["kind"], "DeleteOptions");
    }
}
