//! Watch-side views of Deployments and Jobs that hold only what runboat reads.
//!
//! kube's watcher decodes every object of every listing and watch event.
//! Decoding them as full `k8s_openapi` objects (containers, probes,
//! resources, volumes, and `metadata.managedFields`, which every
//! server-side-apply manager adds to) was most of the server's CPU while
//! ingesting Deployment watch events, although runboat reads a few fields.
//! [`SlimDeployment`] and [`SlimJob`] are the same API resources (same
//! group, version, kind and plural, so an `Api` of them reaches the same
//! URLs) decoded into only those fields: serde skips everything else without
//! building it. They are for reading only; writes keep the full types.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer};

/// A Deployment with only its metadata (name, namespace, uid,
/// resourceVersion, generation, labels, runboat's annotations, creation and
/// deletion timestamps, finalizers), `spec.replicas`, `status.replicas` and
/// `status.availableReplicas`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct SlimDeployment {
    /// The object's metadata, without `managedFields` and the other fields
    /// runboat and kube's watcher do not read.
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: Option<SlimDeploymentSpec>,
    /// `status`.
    pub status: Option<SlimDeploymentStatus>,
}

/// What runboat reads of a Deployment's `spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SlimDeploymentSpec {
    /// `spec.replicas`.
    pub replicas: Option<i32>,
}

/// What runboat reads of a Deployment's `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimDeploymentStatus {
    /// `status.replicas`.
    pub replicas: Option<i32>,
    /// `status.availableReplicas`.
    pub available_replicas: Option<i32>,
    /// `status.conditions`: only the `Available` one is kept; ignored when
    /// not a list of conditions, as the fields runboat does not read.
    #[serde(default, deserialize_with = "lenient_conditions")]
    pub conditions: Option<Vec<SlimJobCondition>>,
}

/// Decodes `status.conditions` straight from the input (no intermediate
/// `serde_json::Value`: this runs for every Deployment event): a list of
/// conditions, anything else skipped as `None`.
fn lenient_conditions<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<SlimJobCondition>>, D::Error> {
    struct Conditions;
    impl<'de> serde::de::Visitor<'de> for Conditions {
        type Value = Option<Vec<SlimJobCondition>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of conditions")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            // Only `Available` is read: the others are skipped without
            // allocating or parsing their times.
            #[derive(Deserialize)]
            struct Raw<'a> {
                #[serde(rename = "type", borrow, default)]
                type_: Cow<'a, str>,
                #[serde(borrow, default)]
                status: Cow<'a, str>,
                #[serde(rename = "lastTransitionTime", borrow, default)]
                last_transition_time: Option<Cow<'a, str>>,
            }
            let mut out = Vec::new();
            while let Some(c) = seq.next_element::<Raw<'_>>()? {
                if c.type_ != "Available" {
                    continue;
                }
                let last_transition_time = match c.last_transition_time {
                    None => None,
                    Some(t) => Some(Time(t.parse().map_err(|e| {
                        serde::de::Error::custom(format_args!("lastTransitionTime {t:?}: {e}"))
                    })?)),
                };
                out.push(SlimJobCondition {
                    type_: c.type_.into_owned(),
                    status: c.status.into_owned(),
                    last_transition_time,
                });
            }
            Ok(Some(out))
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(Conditions)
}

/// A Job with only its metadata (the same fields as [`SlimDeployment`]'s)
/// and the status fields its phase is derived from.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct SlimJob {
    /// The object's metadata, without `managedFields` and the other fields
    /// runboat and kube's watcher do not read.
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    /// `status`.
    pub status: Option<SlimJobStatus>,
}

/// What runboat reads of a Job's `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SlimJobStatus {
    /// `status.active`: pods running.
    pub active: Option<i32>,
    /// `status.succeeded`: pods that succeeded.
    pub succeeded: Option<i32>,
    /// `status.failed`: pods that failed.
    pub failed: Option<i32>,
    /// `status.startTime`.
    #[serde(rename = "startTime")]
    pub start_time: Option<Time>,
    /// `status.completionTime` (set when the Job succeeded).
    #[serde(rename = "completionTime")]
    pub completion_time: Option<Time>,
    /// `status.conditions`.
    pub conditions: Option<Vec<SlimJobCondition>>,
}

/// What runboat reads of one of a Job's `status.conditions`. A missing
/// field is empty, as in `k8s_openapi`'s `JobCondition`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SlimJobCondition {
    /// `type`: `Complete`, `Failed`, `SuccessCriteriaMet`, `FailureTarget`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `status`: `True`, `False` or `Unknown`.
    pub status: String,
    /// `lastTransitionTime`.
    #[serde(rename = "lastTransitionTime")]
    pub last_transition_time: Option<Time>,
}

/// The metadata fields that are decoded; every other one (`managedFields`,
/// `ownerReferences`, …) is skipped. `name`, `namespace` and
/// `resourceVersion` are what kube's watcher needs; labels, annotations and
/// the timestamps are what runboat reads; the rest are kept because they
/// are small and identify the object in logs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaFields {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "contract_annotations")]
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
}

/// True for the annotations runboat reads: those of its contract
/// (`runboat/…`). The others (kubectl's `last-applied-configuration`, a
/// copy of the whole object, is the big one) are skipped while decoding:
/// at 10,000 builds they would be most of what a full listing holds.
pub(crate) fn is_contract_annotation(key: &str) -> bool {
    key.starts_with("runboat/")
}

/// Decodes an annotations map keeping only [`is_contract_annotation`] keys;
/// the other values are skipped without being built.
fn contract_annotations<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of strings, or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if is_contract_annotation(&key) {
                    out.insert(key, map.next_value::<String>()?);
                } else {
                    // Still checked to be a string, as the full type would.
                    map.next_value::<IgnoredString>()?;
                }
            }
            Ok(Some(out))
        }
    }

    deserializer.deserialize_option(Visitor)
}

/// A string value, checked and dropped without being copied.
struct IgnoredString;

impl<'de> Deserialize<'de> for IgnoredString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = IgnoredString;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<IgnoredString, E> {
                Ok(IgnoredString)
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

/// Decodes `metadata` through [`MetaFields`]. A `null` metadata is the
/// default one, as in `k8s_openapi`'s types.
fn slim_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let Some(m) = Option::<MetaFields>::deserialize(deserializer)? else {
        return Ok(ObjectMeta::default());
    };
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        generation: m.generation,
        labels: m.labels,
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        ..ObjectMeta::default()
    })
}

/// The fields of `meta` that [`slim_meta`] decodes, copied.
fn copy_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        labels: meta.labels.clone(),
        annotations: meta.annotations.as_ref().map(|a| {
            a.iter()
                .filter(|(k, _)| is_contract_annotation(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        creation_timestamp: meta.creation_timestamp.clone(),
        deletion_timestamp: meta.deletion_timestamp.clone(),
        finalizers: meta.finalizers.clone(),
        ..ObjectMeta::default()
    }
}

impl From<&Deployment> for SlimDeployment {
    /// The same fields a watch decodes, copied from a full Deployment.
    fn from(d: &Deployment) -> SlimDeployment {
        SlimDeployment {
            metadata: copy_meta(&d.metadata),
            spec: d.spec.as_ref().map(|s| SlimDeploymentSpec { replicas: s.replicas }),
            status: d.status.as_ref().map(|s| SlimDeploymentStatus {
                replicas: s.replicas,
                available_replicas: s.available_replicas,
                conditions: s.conditions.as_ref().map(|cs| {
                    cs.iter()
                        .filter(|c| c.type_ == "Available")
                        .map(|c| SlimJobCondition {
                            type_: c.type_.clone(),
                            status: c.status.clone(),
                            last_transition_time: c.last_transition_time.clone(),
                        })
                        .collect()
                }),
            }),
        }
    }
}

impl From<&Job> for SlimJob {
    /// The same fields a watch decodes, copied from a full Job.
    fn from(j: &Job) -> SlimJob {
        SlimJob {
            metadata: copy_meta(&j.metadata),
            status: j.status.as_ref().map(|s| SlimJobStatus {
                active: s.active,
                succeeded: s.succeeded,
                failed: s.failed,
                start_time: s.start_time.clone(),
                completion_time: s.completion_time.clone(),
                conditions: s.conditions.as_ref().map(|cs| {
                    cs.iter()
                        .map(|c| SlimJobCondition {
                            type_: c.type_.clone(),
                            status: c.status.clone(),
                            last_transition_time: c.last_transition_time.clone(),
                        })
                        .collect()
                }),
            }),
        }
    }
}

/// `kube::Resource` for a slim type: the API resource of the full
/// `k8s_openapi` type `$full`, so an `Api<$slim>` reaches the same URLs.
macro_rules! same_resource_as {
    ($slim:ty, $full:ty) => {
        impl kube::Resource for $slim {
            type DynamicType = ();
            type Scope = <$full as k8s_openapi::Resource>::Scope;

            fn kind(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::KIND.into()
            }

            fn group(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::GROUP.into()
            }

            fn version(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::VERSION.into()
            }

            fn api_version(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::API_VERSION.into()
            }

            fn plural(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

same_resource_as!(SlimDeployment, Deployment);
same_resource_as!(SlimJob, Job);

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::batch::v1::Job;
    use kube::Resource;
    use kube::core::{ObjectList, WatchEvent};
    use proptest::prelude::*;
    use runboat_core::contract::{LABEL_BUILD, LABEL_JOB_KIND};
    use runboat_core::{DeploymentFacts, JobFacts, JobKind, JobPhase};
    use serde_json::{Value, json};

    use super::*;
    use crate::cluster::convert::{deployment_facts, job_facts};

    #[test]
    fn deployment_conditions_are_read_from_a_list_and_skipped_otherwise() {
        let status = |conditions: Value| {
            serde_json::from_value::<SlimDeploymentStatus>(json!({
                "replicas": 1,
                "conditions": conditions,
            }))
            .expect("decodes")
            .conditions
        };
        let list = status(json!([{
            "type": "Progressing", "status": "True", "lastTransitionTime": "2024-05-01T12:00:00Z",
        }, {
            "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
            "lastTransitionTime": "2024-05-01T12:34:56Z", "message": "ok",
        }]))
        .expect("a list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].type_, "Available");
        assert_eq!(
            list[0].last_transition_time.as_ref().map(|t| t.0.as_second()),
            Some(1_714_566_896)
        );
        for other in [json!("x"), json!(3), json!({"a": [1]}), json!(null), json!(true)] {
            assert_eq!(status(other.clone()), None, "{other}");
        }
    }

    /// A Deployment as the API server returns it for the default kubefiles:
    /// two containers, probes, resources, volumes, server defaults, status
    /// conditions and three `managedFields` entries.
    const DEPLOYMENT: &str = include_str!("testdata/deployment.json");
    /// The default kubefiles' initialize Job as the API server returns it,
    /// completed.
    const JOB: &str = include_str!("testdata/job.json");

    /// `deployment_facts` as it was on the full `k8s_openapi` type, before
    /// the watch decoded slim types: the reference the slim path must match.
    fn reference_deployment_facts(deployment: &Deployment) -> Option<DeploymentFacts> {
        let meta = &deployment.metadata;
        let name = meta.name.clone()?;
        let labels = meta.labels.clone().unwrap_or_default();
        if !labels.contains_key(LABEL_BUILD) {
            return None;
        }
        let status = deployment.status.as_ref();
        Some(DeploymentFacts {
            name,
            // Only the contract's annotations are kept (see
            // `is_contract_annotation`).
            annotations: meta
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("runboat/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            labels,
            spec_replicas: deployment.spec.as_ref().and_then(|s| s.replicas),
            status_replicas: status.and_then(|s| s.replicas),
            available_replicas: status.and_then(|s| s.available_replicas),
            deletion_timestamp: meta.deletion_timestamp.as_ref().map(|t| t.0),
            creation_timestamp: meta.creation_timestamp.as_ref().map(|t| t.0),
            available_since: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "Available" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
        })
    }

    /// `job_facts` and `job_phase` as they were on the full `k8s_openapi` Job.
    fn reference_job_facts(job: &Job) -> Option<JobFacts> {
        let meta = &job.metadata;
        let name = meta.name.clone()?;
        let labels = meta.labels.as_ref();
        let build_name = labels.and_then(|l| l.get(LABEL_BUILD)).cloned();
        let kind = labels.and_then(|l| l.get(LABEL_JOB_KIND)).and_then(|k| JobKind::from_label(k));
        let (Some(build_name), Some(kind)) = (build_name, kind) else { return None };
        let phase = match job.status.as_ref() {
            None => JobPhase::Pending,
            Some(status) => {
                let condition = |types: &[&str]| {
                    status
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.status == "True" && types.contains(&c.type_.as_str()))
                };
                if condition(&["Complete", "SuccessCriteriaMet"]) {
                    JobPhase::Succeeded
                } else if condition(&["Failed", "FailureTarget"]) {
                    JobPhase::Failed
                } else if status.active.unwrap_or(0) > 0 {
                    JobPhase::Running
                } else if status.succeeded.unwrap_or(0) > 0 {
                    JobPhase::Succeeded
                } else if status.failed.unwrap_or(0) > 0 {
                    JobPhase::Failed
                } else {
                    JobPhase::Pending
                }
            }
        };
        let status = job.status.as_ref();
        let ended = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.status == "True" && ["Failed", "FailureTarget"].contains(&c.type_.as_str()))
            .and_then(|c| c.last_transition_time.as_ref());
        Some(JobFacts {
            name,
            build_name,
            kind,
            phase,
            deleting: meta.deletion_timestamp.is_some(),
            started: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            finished: match phase {
                JobPhase::Succeeded => status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
                JobPhase::Failed => ended.map(|t| t.0),
                _ => None,
            },
        })
    }

    /// The facts of one Deployment JSON by the three paths: the reference
    /// on the full type, the slim decode, and the full type copied into the
    /// slim one (`get_deployment`'s path). Asserts they agree.
    fn deployment_facts_agree(value: &Value) -> Option<DeploymentFacts> {
        let full: Deployment = serde_json::from_value(value.clone()).expect("full deployment");
        let slim: SlimDeployment = serde_json::from_value(value.clone()).expect("slim deployment");
        let reference = reference_deployment_facts(&full);
        assert_eq!(deployment_facts(&slim), reference, "slim decode of {value}");
        assert_eq!(deployment_facts(&SlimDeployment::from(&full)), reference, "copy of {value}");
        assert_eq!(SlimDeployment::from(&full), slim, "the copy is the slim decode");
        reference
    }

    fn job_facts_agree(value: &Value) -> Option<JobFacts> {
        let full: Job = serde_json::from_value(value.clone()).expect("full job");
        let slim: SlimJob = serde_json::from_value(value.clone()).expect("slim job");
        let reference = reference_job_facts(&full);
        assert_eq!(job_facts(&slim), reference, "slim decode of {value}");
        assert_eq!(job_facts(&SlimJob::from(&full)), reference, "copy of {value}");
        assert_eq!(SlimJob::from(&full), slim, "the copy is the slim decode");
        reference
    }

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    /// kubectl's copy of the applied object (the original runboat applies
    /// with kubectl) and other foreign annotations are not kept, but a
    /// non-string value is refused as the full type refuses it.
    #[test]
    fn only_the_contract_annotations_are_decoded() {
        let mut value = fixture(DEPLOYMENT);
        let copy = serde_json::to_string(&value).expect("json");
        value["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!(copy);
        let slim: SlimDeployment = serde_json::from_value(value.clone()).expect("slim");
        let kept = slim.metadata.annotations.expect("annotations");
        assert_eq!(kept.len(), 6);
        assert!(kept.keys().all(|k| k.starts_with("runboat/")));
        let facts = deployment_facts_agree(&value).expect("a runboat deployment");
        assert_eq!(facts.annotations, kept);
        value["metadata"]["annotations"]["other"] = json!(1);
        assert!(serde_json::from_value::<SlimDeployment>(value.clone()).is_err());
        assert!(serde_json::from_value::<Deployment>(value).is_err());
        let null: SlimDeployment =
            serde_json::from_value(json!({"metadata": {"annotations": null}})).expect("null");
        assert_eq!(null.metadata.annotations, None);
    }

    #[test]
    fn a_full_deployment_gives_the_facts_of_the_full_type() {
        let value = fixture(DEPLOYMENT);
        let facts = deployment_facts_agree(&value).expect("a runboat deployment");
        assert_eq!(facts.name, "b5f2c1e0a9d8c7b6a-odoo");
        assert_eq!(facts.labels.get(LABEL_BUILD).map(String::as_str), Some("b5f2c1e0a9d8c7b6a"));
        // The fixture's 7 annotations less `deployment.kubernetes.io/revision`:
        // only the contract's are kept.
        assert_eq!(facts.annotations.len(), 6);
        assert!(facts.annotations.keys().all(|k| k.starts_with("runboat/")));
        assert_eq!(
            (facts.spec_replicas, facts.status_replicas, facts.available_replicas),
            (Some(1), Some(1), Some(1))
        );
        assert_eq!(facts.creation_timestamp, Some("2026-11-28T09:14:02Z".parse().expect("ts")));
        assert_eq!(facts.deletion_timestamp, None);

        // What kube's watcher needs is kept; managedFields are not decoded.
        let slim: SlimDeployment = serde_json::from_str(DEPLOYMENT).expect("slim");
        assert_eq!(slim.meta().resource_version.as_deref(), Some("184467"));
        assert_eq!(slim.meta().namespace.as_deref(), Some("runboat-builds"));
        assert_eq!(slim.meta().uid.as_deref(), Some("6f1c2b7e-3a4d-4e5f-9a8b-7c6d5e4f3a2b"));
        assert_eq!(slim.meta().generation, Some(3));
        assert_eq!(slim.meta().finalizers, Some(vec!["runboat/cleanup".to_owned()]));
        assert_eq!(slim.meta().managed_fields, None);
        let full: Deployment = serde_json::from_str(DEPLOYMENT).expect("full");
        assert_eq!(full.metadata.managed_fields.map(|m| m.len()), Some(3));
    }

    #[test]
    fn deployment_variants_give_the_facts_of_the_full_type() {
        let base = fixture(DEPLOYMENT);
        let variant = |edit: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            edit(&mut v);
            v
        };
        let deleting = variant(&|v| {
            v["metadata"]["deletionTimestamp"] = json!("2026-11-29T10:00:00Z");
        });
        let facts = deployment_facts_agree(&deleting).expect("runboat deployment");
        assert_eq!(facts.deletion_timestamp, Some("2026-11-29T10:00:00Z".parse().expect("ts")));

        let new = variant(&|v| {
            v.as_object_mut().expect("object").remove("status");
            v["spec"]["replicas"] = json!(0);
        });
        let facts = deployment_facts_agree(&new).expect("runboat deployment");
        assert_eq!((facts.spec_replicas, facts.status_replicas), (Some(0), None));

        let null_status = variant(&|v| v["status"] = Value::Null);
        assert_eq!(deployment_facts_agree(&null_status).expect("runboat").status_replicas, None);

        // Not runboat's: skipped by both paths.
        let unlabelled = variant(&|v| {
            v["metadata"].as_object_mut().expect("metadata").remove("labels");
        });
        assert_eq!(deployment_facts_agree(&unlabelled), None);
        let other_label = variant(&|v| v["metadata"]["labels"] = json!({"app": "odoo"}));
        assert_eq!(deployment_facts_agree(&other_label), None);
        let nameless = variant(&|v| {
            v["metadata"].as_object_mut().expect("metadata").remove("name");
        });
        assert_eq!(deployment_facts_agree(&nameless), None);
    }

    #[test]
    fn jobs_in_each_phase_give_the_facts_of_the_full_type() {
        let base = fixture(JOB);
        let facts = job_facts_agree(&base).expect("a runboat job");
        assert_eq!(facts.name, "b5f2c1e0a9d8c7b6a-initialize");
        assert_eq!(facts.build_name, "b5f2c1e0a9d8c7b6a");
        assert_eq!(facts.kind, JobKind::Initialize);
        assert_eq!(facts.phase, JobPhase::Succeeded);
        assert!(!facts.deleting);
        let condition = |type_: &str, status: &str| {
            json!({"type": type_, "status": status, "reason": "R", "message": "m",
                   "lastProbeTime": "2026-11-28T09:19:55Z",
                   "lastTransitionTime": "2026-11-28T09:19:55Z"})
        };
        let cases = [
            (Value::Null, JobPhase::Pending),
            (json!({}), JobPhase::Pending),
            (
                json!({"startTime": "2026-11-28T09:14:03Z", "active": 1, "ready": 1}),
                JobPhase::Running,
            ),
            (json!({"active": 1, "failed": 1}), JobPhase::Running),
            (json!({"succeeded": 1, "uncountedTerminatedPods": {}}), JobPhase::Succeeded),
            (json!({"failed": 1}), JobPhase::Failed),
            (
                json!({"active": 1, "conditions": [condition("FailureTarget", "True")]}),
                JobPhase::Failed,
            ),
            (
                json!({"failed": 1, "conditions": [condition("FailureTarget", "True"),
                                                   condition("Failed", "True")]}),
                JobPhase::Failed,
            ),
            (json!({"conditions": [condition("Complete", "True")]}), JobPhase::Succeeded),
            (json!({"conditions": [condition("SuccessCriteriaMet", "True")]}), JobPhase::Succeeded),
            (json!({"active": 1, "conditions": [condition("Failed", "False")]}), JobPhase::Running),
            (json!({"conditions": [condition("Suspended", "True")]}), JobPhase::Pending),
        ];
        for (status, phase) in cases {
            let mut job = base.clone();
            job["status"] = status.clone();
            let facts = job_facts_agree(&job).expect("a runboat job");
            assert_eq!(facts.phase, phase, "{status}");
        }
        let mut deleting = base.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-29T10:00:00Z");
        assert!(job_facts_agree(&deleting).expect("a runboat job").deleting);
        let mut unknown_kind = base.clone();
        unknown_kind["metadata"]["labels"][LABEL_JOB_KIND] = json!("x");
        assert_eq!(job_facts_agree(&unknown_kind), None);
        let mut no_build = base;
        no_build["metadata"]["labels"].as_object_mut().expect("labels").remove(LABEL_BUILD);
        assert_eq!(job_facts_agree(&no_build), None);
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_fields_may_be_missing() {
        let extra = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "futureTopLevel": [1, {"a": null}],
            "metadata": {"name": "b1-odoo", "labels": {"runboat/build": "b1"},
                         "futureMeta": {"x": [true]}, "ownerReferences": [{"bogus": 1}],
                         "managedFields": "not even a list"},
            "spec": {"replicas": 2, "futureSpec": 1, "template": "not a template"},
            "status": {"availableReplicas": 1, "futureStatus": "x", "conditions": 7},
        });
        let slim: SlimDeployment = serde_json::from_value(extra).expect("extra fields decode");
        let facts = deployment_facts(&slim).expect("runboat deployment");
        assert_eq!(
            (facts.spec_replicas, facts.status_replicas, facts.available_replicas),
            (Some(2), None, Some(1))
        );

        for minimal in [json!({}), json!({"metadata": null}), json!({"metadata": {}, "spec": null})]
        {
            let slim: SlimDeployment = serde_json::from_value(minimal.clone()).expect("decodes");
            assert_eq!(slim, SlimDeployment::default(), "{minimal}");
            assert_eq!(deployment_facts(&slim), None);
            let job: SlimJob = serde_json::from_value(minimal.clone()).expect("decodes");
            assert_eq!(job, SlimJob::default(), "{minimal}");
        }
        let job: SlimJob = serde_json::from_value(json!({
            "metadata": {"name": "b1-cleanup",
                         "labels": {"runboat/build": "b1", "runboat/job-kind": "cleanup"}},
            "spec": {"anything": 1},
            "status": {"conditions": [{"type": "Complete", "status": "True", "new": 1}]},
        }))
        .expect("job decodes");
        assert_eq!(job_facts(&job).map(|f| f.phase), Some(JobPhase::Succeeded));
    }

    #[test]
    fn malformed_fields_that_are_read_are_errors() {
        let cases = [
            json!({"metadata": "b1-odoo"}),
            json!({"metadata": {"name": 7}}),
            json!({"metadata": {"labels": ["runboat/build"]}}),
            json!({"metadata": {"labels": {"runboat/build": null}}}),
            json!({"metadata": {"annotations": {"a": 1}}}),
            json!({"metadata": {"creationTimestamp": "yesterday"}}),
            json!({"metadata": {"deletionTimestamp": 1_700_000_000}}),
            json!({"metadata": {"resourceVersion": 12}}),
            json!({"metadata": {"finalizers": "runboat/cleanup"}}),
            json!({"spec": {"replicas": "1"}}),
            json!({"spec": {"replicas": 4_294_967_296_i64}}),
            json!({"status": {"availableReplicas": -1.5}}),
            json!({"status": []}),
            json!([]),
            json!("deployment"),
        ];
        for case in cases {
            let err = serde_json::from_value::<SlimDeployment>(case.clone())
                .expect_err("malformed deployment");
            assert!(!err.to_string().is_empty(), "{case}");
        }
        let job_cases = [
            json!({"metadata": {"name": ["b1"]}}),
            json!({"status": {"active": "1"}}),
            json!({"status": {"conditions": [{"type": 1, "status": "True"}]}}),
            json!({"status": {"conditions": {"type": "Complete", "status": "True"}}}),
        ];
        for case in job_cases {
            serde_json::from_value::<SlimJob>(case.clone()).expect_err("malformed job");
            // The full type rejects them too: the watch fails the same way.
            serde_json::from_value::<Job>(case).expect_err("malformed full job");
        }
        serde_json::from_str::<SlimDeployment>(r#"{"metadata": {"name": "x""#)
            .expect_err("truncated JSON");
        // A condition missing a field is not malformed: both types make it
        // empty, so it is no terminal condition.
        for condition in [json!({"type": "Complete"}), json!({"status": "True"})] {
            let job = json!({
                "metadata": {"name": "b1-initialize",
                             "labels": {"runboat/build": "b1", "runboat/job-kind": "initialize"}},
                "status": {"succeeded": 0, "conditions": [condition]},
            });
            assert_eq!(job_facts_agree(&job).map(|f| f.phase), Some(JobPhase::Pending));
        }
    }

    #[test]
    fn watch_events_and_lists_decode_slim() {
        let event = format!(r#"{{"type":"MODIFIED","object":{DEPLOYMENT}}}"#);
        let WatchEvent::Modified(slim) =
            serde_json::from_str::<WatchEvent<SlimDeployment>>(&event).expect("watch event")
        else {
            panic!("not a MODIFIED event");
        };
        assert_eq!(deployment_facts(&slim), deployment_facts_agree(&fixture(DEPLOYMENT)));
        let list = format!(
            r#"{{"kind":"JobList","apiVersion":"batch/v1","metadata":{{"resourceVersion":"9"}},"items":[{JOB}]}}"#
        );
        let list: ObjectList<SlimJob> = serde_json::from_str(&list).expect("list");
        assert_eq!(list.metadata.resource_version.as_deref(), Some("9"));
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0], SlimJob::from(&serde_json::from_str::<Job>(JOB).expect("job")));
    }

    #[test]
    fn slim_types_are_the_same_api_resources() {
        for ns in [None, Some("runboat-builds")] {
            assert_eq!(SlimDeployment::url_path(&(), ns), Deployment::url_path(&(), ns));
            assert_eq!(SlimJob::url_path(&(), ns), Job::url_path(&(), ns));
        }
        assert_eq!(SlimDeployment::kind(&()), "Deployment");
        assert_eq!(SlimDeployment::api_version(&()), "apps/v1");
        assert_eq!(SlimDeployment::plural(&()), "deployments");
        assert_eq!(SlimJob::kind(&()), "Job");
        assert_eq!(SlimJob::api_version(&()), "batch/v1");
        assert_eq!(SlimJob::plural(&()), "jobs");
        assert!(!SlimDeployment::metadata_api());
    }

    /// JSON biased towards the keys the slim types read.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-3i32..4).prop_map(Value::from),
            prop_oneof![
                Just("True".to_owned()),
                Just("2026-11-28T09:14:02Z".to_owned()),
                "[a-z/]{0,6}"
            ]
            .prop_map(Value::from),
        ];
        let key = prop_oneof![
            Just("metadata"),
            Just("spec"),
            Just("status"),
            Just("name"),
            Just("labels"),
            Just("annotations"),
            Just("runboat/build"),
            Just("runboat/job-kind"),
            Just("replicas"),
            Just("availableReplicas"),
            Just("active"),
            Just("succeeded"),
            Just("conditions"),
            Just("type"),
            Just("creationTimestamp"),
            Just("deletionTimestamp"),
            Just("managedFields"),
            Just("other"),
        ]
        .prop_map(str::to_owned);
        leaf.prop_recursive(4, 48, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A Deployment with random facts and random extra fields.
    fn any_deployment() -> impl Strategy<Value = Value> {
        let labels = prop::collection::btree_map(
            prop_oneof![Just("runboat/build".to_owned()), "[a-z]{1,4}"],
            "[a-z0-9]{0,6}",
            0..3,
        );
        let time = (0i64..4_000_000_000).prop_map(|s| {
            jiff::Timestamp::from_second(s)
                .expect("in range")
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        });
        (
            (proptest::option::of("[a-z0-9-]{1,12}"), proptest::option::of(labels.clone())),
            proptest::option::of(labels),
            (proptest::option::of(time.clone()), proptest::option::of(time)),
            (any::<Option<i32>>(), any::<Option<i32>>(), any::<Option<i32>>(), any::<bool>()),
            (any_json(), any_json(), any_json()),
        )
            .prop_map(
                |((name, labels), annotations, (created, deleted), replicas, extra)| {
                    let (spec_replicas, status_replicas, available, has_status) = replicas;
                    let mut d = json!({
                        "metadata": {"name": name, "labels": labels, "annotations": annotations,
                                     "creationTimestamp": created, "deletionTimestamp": deleted,
                                     "managedFields": [{"manager": "m", "fieldsV1": extra.0}],
                                     "otherMeta": extra.1},
                        "spec": {"replicas": spec_replicas, "selector": {}, "template": {},
                                 "otherSpec": extra.2},
                    });
                    if has_status {
                        d["status"] = json!({"replicas": status_replicas,
                                         "availableReplicas": available, "observedGeneration": 1});
                    }
                    d
                },
            )
    }

    proptest! {
        #[test]
        fn random_deployments_give_the_facts_of_the_full_type(d in any_deployment()) {
            deployment_facts_agree(&d);
        }

        /// Any JSON decodes or fails without a panic, and whatever the full
        /// types decode the slim ones decode to the same facts.
        #[test]
        fn any_json_decodes_like_the_full_types(v in any_json()) {
            let slim = serde_json::from_value::<SlimDeployment>(v.clone());
            if let Ok(full) = serde_json::from_value::<Deployment>(v.clone()) {
                let slim = slim.expect("the full type decoded it");
                prop_assert_eq!(deployment_facts(&slim), reference_deployment_facts(&full));
            }
            let slim = serde_json::from_value::<SlimJob>(v.clone());
            if let Ok(full) = serde_json::from_value::<Job>(v) {
                let slim = slim.expect("the full type decoded it");
                prop_assert_eq!(job_facts(&slim), reference_job_facts(&full));
            }
        }
    }
}
