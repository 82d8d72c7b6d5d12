"""The official Python Kubernetes client against kubesim.

Run by kubesim/tests/conformance/python.rs as
`python clients_check.py <server url> <namespace>`, once per installed
client version. Each check says what kube-apiserver does; a failure prints
the difference, and the script exits non-zero if any check failed. Waits
are watches with server-side timeouts, never sleeps.
"""

import sys
import threading
import traceback

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

URL, NS = sys.argv[1], sys.argv[2]
TIMEOUT = 10  # seconds, for each watch

config = client.Configuration()
config.host = URL
api = client.ApiClient(config)
core = client.CoreV1Api(api)
batch = client.BatchV1Api(api)

failures = []

# Each run gets its own namespace, so that versions can share a server.
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))


class Difference(Exception):
    """kubesim did not do what kube-apiserver does."""


def expect(cond, apiserver, got):
    if not cond:
        raise Difference(f"kube-apiserver {apiserver}; kubesim: {got}")


def api_error(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        return e
    return None


def check(fn):
    try:
        fn()
        print(f"ok   {fn.__name__}")
    except Difference as e:
        failures.append(fn.__name__)
        print(f"FAIL {fn.__name__}: {e}")
    except Exception:  # an unexpected error is a failure too, with its trace
        failures.append(fn.__name__)
        print(f"FAIL {fn.__name__}: unexpected error")
        traceback.print_exc(file=sys.stdout)
    return fn


def patch_configmap(name, body, content_type, **params):
    """A patch of the given type (34.x picks the type from the body: a list
    is a JSON patch, a dict a strategic merge patch; newer ones take
    `_content_type`). `params`: field_manager, force."""
    try:
        return core.patch_namespaced_config_map(
            name, NS, body, _content_type=content_type, **params)
    except TypeError:
        query = [({"field_manager": "fieldManager"}.get(k, k), str(v).lower() if isinstance(v, bool) else v)
                 for k, v in params.items()]
        return api.call_api(
            f"/api/v1/namespaces/{NS}/configmaps/{name}", "PATCH", query_params=query,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, response_type="V1ConfigMap", auth_settings=["BearerToken"],
            _return_http_data_only=True)


def configmap(name, labels=None, annotations=None):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations),
        data={"k": "v"},
    )


@check
def watch_from_a_list_resource_version_sees_added_modified_deleted():
    # The client sends watch=True: the API server reads any value but 0/false as true.
    listed = core.list_namespaced_config_map(NS)
    rv = listed.metadata.resource_version
    seen = []

    def writer():
        core.create_namespaced_config_map(NS, configmap("py-watched"))
        patch_configmap("py-watched", {"data": {"k": "w"}}, "application/merge-patch+json")
        core.delete_namespaced_config_map("py-watched", NS)

    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, NS, resource_version=rv,
                      timeout_seconds=TIMEOUT)
    t = threading.Thread(target=writer)
    t.start()
    for event in stream:
        if event["object"].metadata.name == "py-watched":
            seen.append(event["type"])
        if event["type"] == "DELETED":
            w.stop()
    t.join()
    expect(seen == ["ADDED", "MODIFIED", "DELETED"],
           "streams ADDED, MODIFIED, DELETED after the list's resourceVersion", seen)


@check
def json_patch_replace_of_a_missing_annotation_adds_it():
    core.create_namespaced_config_map(NS, configmap("py-jsonpatch", annotations={"a": "1"}))
    patched = patch_configmap(
        "py-jsonpatch",
        [{"op": "replace", "path": "/metadata/annotations/runboat~1last-scaled",
          "value": "2024-01-01T00:00:00Z"}],
        "application/json-patch+json")
    expect(patched.metadata.annotations.get("runboat/last-scaled") == "2024-01-01T00:00:00Z",
           "(evanphx/json-patch v4) sets a missing key on replace",
           patched.metadata.annotations)
    # With no annotations map at all, v4 answers an error (422).
    core.create_namespaced_config_map(NS, configmap("py-jsonpatch-bare"))
    err = api_error(patch_configmap, "py-jsonpatch-bare",
                    [{"op": "replace", "path": "/metadata/annotations/x", "value": "1"}],
                    "application/json-patch+json")
    expect(err is not None and err.status == 422,
           "answers 422 when the replaced member's parent is missing",
           err and (err.status, err.body))


@check
def merge_patch_sets_and_removes_fields():
    core.create_namespaced_config_map(NS, configmap("py-merge", labels={"a": "1", "b": "2"}))
    patched = patch_configmap(
        "py-merge", {"metadata": {"labels": {"a": None, "c": "3"}}, "data": {"n": "m"}},
        "application/merge-patch+json")
    expect(patched.metadata.labels == {"b": "2", "c": "3"},
           "removes null members and merges the others (RFC 7386)", patched.metadata.labels)
    expect(patched.data == {"k": "v", "n": "m"}, "merges data", patched.data)


@check
def delete_collection_with_a_label_selector_deletes_only_the_selection():
    for i in range(3):
        core.create_namespaced_config_map(NS, configmap(f"py-coll-{i}", labels={"sel": "yes"}))
    core.create_namespaced_config_map(NS, configmap("py-coll-keep", labels={"sel": "no"}))
    core.delete_collection_namespaced_config_map(NS, label_selector="sel=yes")
    left = {c.metadata.name for c in core.list_namespaced_config_map(NS, label_selector="sel").items}
    expect(left == {"py-coll-keep"}, "deletes the selected objects only", sorted(left))


@check
def create_and_replace_conflicts_answer_409():
    core.create_namespaced_config_map(NS, configmap("py-conflict"))
    err = api_error(core.create_namespaced_config_map, NS, configmap("py-conflict"))
    expect(err is not None and err.status == 409 and '"AlreadyExists"' in err.body,
           "answers 409 AlreadyExists to a second create", err and (err.status, err.body))
    current = core.read_namespaced_config_map("py-conflict", NS)
    stale = current.metadata.resource_version
    current.data = {"k": "first"}
    core.replace_namespaced_config_map("py-conflict", NS, current)
    current.data = {"k": "second"}
    current.metadata.resource_version = stale
    err = api_error(core.replace_namespaced_config_map, "py-conflict", NS, current)
    expect(err is not None and err.status == 409 and '"Conflict"' in err.body,
           "answers 409 Conflict to a replace with a stale resourceVersion",
           err and (err.status, err.body))


@check
def server_side_apply_conflict_between_managers():
    applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py-ssa"},
               "data": {"k": "alice"}}
    apply = "application/apply-patch+yaml"
    patch_configmap("py-ssa", applied, apply, field_manager="alice")
    applied["data"]["k"] = "bob"
    err = api_error(patch_configmap, "py-ssa", applied, apply, field_manager="bob")
    expect(err is not None and err.status == 409,
           "answers 409 when an apply changes another manager's field",
           err and (err.status, err.body))
    expect('"FieldManagerConflict"' in err.body and '".data.k"' in err.body
           and 'Apply failed with 1 conflict: conflict with \\"alice\\": .data.k' in err.body,
           "names the conflict: reason Conflict, causes FieldManagerConflict on .data.k",
           err.body)
    forced = patch_configmap("py-ssa", applied, apply, field_manager="bob", force=True)
    owners = {m.manager: m.fields_v1 for m in forced.metadata.managed_fields}
    expect(forced.data == {"k": "bob"} and owners.get("bob") == {"f:data": {"f:k": {}}}
           and "alice" not in owners,
           "with force, moves the field to the applier in managedFields", owners)


@check
def pod_log_of_a_finished_job():
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="py-job"),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(
            spec=client.V1PodSpec(restart_policy="Never", containers=[
                client.V1Container(name="main", image="busybox")]))))
    batch.create_namespaced_job(NS, job)
    pod = None
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_pod, NS, label_selector="job-name=py-job",
                          timeout_seconds=TIMEOUT):
        if event["object"].status.phase in ("Succeeded", "Failed"):
            pod = event["object"].metadata.name
            w.stop()
    expect(pod is not None, "runs the job's pod to completion (kubesim's job controller)",
           "no finished pod within the timeout")
    log = core.read_namespaced_pod_log(pod, NS)
    expect("kubesim: job py-job" in log, "returns the container's log as text", repr(log))


if failures:
    print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("all checks passed")
