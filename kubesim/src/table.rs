//! `meta.k8s.io/v1` Table output, which kubectl asks for in `get`: the
//! columns kubectl shows for the kinds runboat uses.

use serde_json::{Value, json};

use crate::resources::ResourceDef;

/// Whether an Accept header asks for a Table.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

fn age(created: Option<&str>) -> String {
    let Some(ts) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - ts.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn columns(def: &ResourceDef) -> Vec<(&'static str, &'static str)> {
    let mut cols = vec![("Name", "string")];
    cols.extend(match def.plural {
        "deployments" => {
            vec![("Ready", "string"), ("Up-to-date", "integer"), ("Available", "integer")]
        }
        "replicasets" => vec![("Desired", "integer"), ("Current", "integer"), ("Ready", "integer")],
        "pods" => vec![("Ready", "string"), ("Status", "string"), ("Restarts", "string")],
        "jobs" => vec![("Status", "string"), ("Completions", "string")],
        "services" => vec![
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("External-IP", "string"),
            ("Port(s)", "string"),
        ],
        "namespaces" => vec![("Status", "string")],
        "persistentvolumeclaims" => vec![("Status", "string"), ("Capacity", "string")],
        "configmaps" => vec![("Data", "integer")],
        "secrets" => vec![("Type", "string"), ("Data", "integer")],
        "ingresses" => vec![("Hosts", "string")],
        "events" => vec![
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
        _ => vec![],
    });
    cols.push(("Age", "string"));
    cols
}

fn cells(def: &ResourceDef, v: &Value) -> Vec<Value> {
    let mut out =
        vec![json!(v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default())];
    match def.plural {
        "deployments" => {
            out.push(json!(format!(
                "{}/{}",
                int(v, "/status/readyReplicas"),
                int(v, "/spec/replicas")
            )));
            out.push(json!(int(v, "/status/updatedReplicas")));
            out.push(json!(int(v, "/status/availableReplicas")));
        }
        "replicasets" => {
            out.push(json!(int(v, "/spec/replicas")));
            out.push(json!(int(v, "/status/replicas")));
            out.push(json!(int(v, "/status/readyReplicas")));
        }
        "pods" => {
            let total = v.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let statuses = v.pointer("/status/containerStatuses").and_then(Value::as_array);
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let mut phase =
                v.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending").to_string();
            if phase == "Succeeded" {
                phase = "Completed".into();
            } else if phase == "Failed" {
                phase = "Error".into();
            } else if phase == "Pending" {
                phase = "ContainerCreating".into();
            }
            if v.pointer("/metadata/deletionTimestamp").is_some() {
                phase = "Terminating".into();
            }
            out.push(json!(format!("{ready}/{total}")));
            out.push(json!(phase));
            out.push(json!("0"));
        }
        "jobs" => {
            let conds = v
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has = |t: &str| conds.iter().any(|c| c["type"] == t && c["status"] == "True");
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            out.push(json!(status));
            out.push(json!(format!(
                "{}/{}",
                int(v, "/status/succeeded"),
                v.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1)
            )));
        }
        "services" => {
            let ports: Vec<String> = v
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(json!(v.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")));
            out.push(json!(v.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("None")));
            out.push(json!("<none>"));
            out.push(json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }));
        }
        "namespaces" => {
            out.push(json!(v.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Active")))
        }
        "persistentvolumeclaims" => {
            out.push(json!(
                v.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending")
            ));
            out.push(json!(
                v.pointer("/status/capacity/storage").and_then(Value::as_str).unwrap_or_default()
            ));
        }
        "configmaps" => {
            let n = ["data", "binaryData"]
                .iter()
                .filter_map(|k| v.get(*k).and_then(Value::as_object))
                .map(serde_json::Map::len)
                .sum::<usize>();
            out.push(json!(n));
        }
        "secrets" => {
            out.push(json!(v.get("type").and_then(Value::as_str).unwrap_or("Opaque")));
            out.push(json!(
                v.get("data").and_then(Value::as_object).map_or(0, serde_json::Map::len)
            ));
        }
        "ingresses" => {
            let hosts: Vec<&str> = v
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .map(|rs| rs.iter().filter_map(|r| r["host"].as_str()).collect())
                .unwrap_or_default();
            out.push(json!(if hosts.is_empty() { "*".to_string() } else { hosts.join(",") }));
        }
        "events" => {
            let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
            out.push(json!(s("/type")));
            out.push(json!(s("/reason")));
            out.push(json!(format!(
                "{}/{}",
                s("/involvedObject/kind").to_lowercase(),
                s("/involvedObject/name")
            )));
            out.push(json!(s("/message")));
        }
        _ => {}
    }
    out.push(json!(age(v.pointer("/metadata/creationTimestamp").and_then(Value::as_str))));
    out
}

/// A Table of `items`, each row carrying the object's metadata as kubectl expects.
pub(crate) fn table(def: &ResourceDef, items: &[Value], list_meta: Value) -> Value {
    let column_definitions: Vec<Value> = columns(def)
        .into_iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            json!({"name": name, "type": ty, "format": if i == 0 { "name" } else { "" }, "description": name, "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|v| {
            json!({
                "cells": cells(def, v),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]},
            })
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": column_definitions, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DEPLOYMENTS, def};

    #[test]
    fn deployment_rows_show_readiness() {
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"}, "spec": {"replicas": 2}, "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}});
        let t = table(def(DEPLOYMENTS), &[d], json!({}));
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "1/2", 2, 1, age(Some("2020-01-01T00:00:00Z"))])
        );
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(5));
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
    }
}
