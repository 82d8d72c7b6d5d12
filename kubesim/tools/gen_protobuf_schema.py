#!/usr/bin/env python3
"""Generates kubesim/src/protobuf/schema.rs: the protobuf field numbers of the
kinds kubesim serves, with their JSON names.

Field numbers and types come from the k8s-pb crate's generated code (prost
attributes, taken from Kubernetes' generated.proto files); JSON names from
k8s-openapi's serializers (proto field names lose their case in prost's
snake_case, e.g. hostIPC), which also tell Go's inline embedded structs
(Volume.VolumeSource, IngressRule.IngressRuleValue, Probe.ProbeHandler):
they have a proto field but their fields are the parent's in JSON. Both crates are read from cargo's registry cache
(`cargo fetch` a project depending on k8s-pb to get it); kubesim depends on
neither at build time.

    python3 kubesim/tools/gen_protobuf_schema.py > kubesim/src/protobuf/schema.rs
"""
import glob
import os
import re
import sys

REG = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
PB = next(g for r in REG for g in glob.glob(r + "k8s-pb-*/src"))
OA = sorted(g for r in REG for g in glob.glob(r + "k8s-openapi-0.29*/src/v1_*"))[-1]

PACKAGES = [
    "api/core/v1", "api/apps/v1", "api/batch/v1", "api/networking/v1",
    "api/coordination/v1", "api/autoscaling/v1", "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/util/intstr", "apimachinery/pkg/api/resource",
    "apimachinery/pkg/runtime",
]
ROOTS = [
    ("v1", "Namespace", "api/core/v1"), ("v1", "Pod", "api/core/v1"),
    ("v1", "Service", "api/core/v1"), ("v1", "ConfigMap", "api/core/v1"),
    ("v1", "Secret", "api/core/v1"), ("v1", "PersistentVolumeClaim", "api/core/v1"),
    ("v1", "Event", "api/core/v1"), ("v1", "ServiceAccount", "api/core/v1"),
    ("apps/v1", "Deployment", "api/apps/v1"), ("apps/v1", "ReplicaSet", "api/apps/v1"),
    ("batch/v1", "Job", "api/batch/v1"), ("networking.k8s.io/v1", "Ingress", "api/networking/v1"),
    ("coordination.k8s.io/v1", "Lease", "api/coordination/v1"),
    ("autoscaling/v1", "Scale", "api/autoscaling/v1"),
    ("v1", "DeleteOptions", "apimachinery/pkg/apis/meta/v1"),
]
# Messages with their own JSON form.
SPECIAL = {
    ("apimachinery/pkg/apis/meta/v1", "Time"): "Time",
    ("apimachinery/pkg/apis/meta/v1", "MicroTime"): "MicroTime",
    ("apimachinery/pkg/apis/meta/v1", "Duration"): "Duration",
    ("apimachinery/pkg/apis/meta/v1", "FieldsV1"): "RawJson",
    ("apimachinery/pkg/runtime", "RawExtension"): "RawJson",
    ("apimachinery/pkg/util/intstr", "IntOrString"): "IntOrString",
    ("apimachinery/pkg/api/resource", "Quantity"): "Quantity",
}

json_names = {}
for path in glob.glob(OA + "/**/*.rs", recursive=True):
    for name in re.findall(r'serialize_field\(&mut state, "([A-Za-z0-9_$]+)"', open(path).read()):
        json_names.setdefault(name.lower().replace("_", ""), set()).add(name)


def struct_fields(pkg, message):
    """The JSON names k8s-openapi serializes for a message, or None."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", message)
    snake = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", snake).lower()
    path = f"{OA}/{pkg}/{snake}.rs"
    if not os.path.exists(path):
        return None
    return set(re.findall(r'serialize_field\(&mut state, "([A-Za-z0-9_$]+)"', open(path).read()))


def json_name(snake):
    snake = snake.removeprefix("r#")
    key = snake.replace("_", "")
    found = json_names.get(key)
    if found and len(found) == 1:
        return next(iter(found))
    parts = snake.split("_")
    camel = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
    if found and camel in found:
        return camel
    if found:
        sys.exit(f"ambiguous JSON name for {snake}: {found}")
    return camel


FIELD = re.compile(
    r'#\[prost\((?P<ty>[a-z0-9_]+(?: = "[^"]*")?)(?:, (?P<label>optional|repeated))?, tag = "(?P<tag>\d+)"\)\]\s*'
    r'pub (?P<name>[a-z0-9_#]+):\s*(?P<rust>(?:[^<>,#]|<(?:[^<>]|<[^<>]*>)*>)+?),\s*\n', re.S)
messages = {}
for pkg in PACKAGES:
    text = open(f"{PB}/{pkg}/mod.rs").read()
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
        fields = []
        for f in FIELD.finditer(m.group(2) + "\n"):
            fields.append((int(f["tag"]), f["ty"], f["label"], f["name"], " ".join(f["rust"].split())))
        messages[(pkg, m.group(1))] = fields


def resolve(pkg, rust):
    """The (package, message) a prost type path names."""
    inner = rust.replace(" ", "").rstrip(">").rstrip(",")
    inner = inner.split("<")[-1].split(",")[-1]
    segs = [s for s in inner.split("::") if s]
    if len(segs) == 1:
        return (pkg, segs[0])
    ups = segs.count("super")
    base = pkg.split("/")[: len(pkg.split("/")) - ups]
    segs = base + [s for s in segs if s != "super"]
    return ("/".join(segs[:-1]), segs[-1])


order = []
index = {}


def visit(key):
    if key in index or key in SPECIAL:
        return
    if key not in messages:
        sys.exit(f"unknown message {key}")
    index[key] = len(order)
    order.append(key)
    for tag, ty, label, name, rust in messages[key]:
        if ty == "message" or ty.endswith('message"'):
            visit(resolve(key[0], rust))


for _, kind, pkg in ROOTS:
    visit((pkg, kind))


def kind_of(pkg, ty, rust):
    scalar = {"string": "Str", "int32": "Int", "int64": "Int", "bool": "Bool",
              "double": "Double", 'bytes = "vec"': "Bytes"}
    if ty in scalar:
        return scalar[ty]
    if ty == "message":
        target = resolve(pkg, rust)
        if target in SPECIAL:
            return SPECIAL[target]
        return f"Msg({index[target]})"
    if ty.startswith("btree_map"):
        value = ty.split(",")[1].strip().rstrip('"')
        if value == "string":
            return "MapStr"
        if value == "bytes":
            return "MapBytes"
        target = resolve(pkg, rust)
        if SPECIAL.get(target) == "Quantity":
            return "MapQuantity"
        return f"MapMsg({index[target]})"
    sys.exit(f"unknown type {ty}")


out = ["// @generated by kubesim/tools/gen_protobuf_schema.py from the k8s-pb",
       "// crate's prost code (Kubernetes' generated.proto files) and k8s-openapi",
       "// JSON names (the newest k8s-openapi version). Do not edit by hand.", "",
       "use super::{Field, Kind, Message};", "",
       "pub(super) static MESSAGES: &[Message] = &["]
for key in order:
    pkg, name = key
    out.append(f"    Message {{ name: \"{name}\", fields: &[")
    known = struct_fields(pkg, name)
    for tag, ty, label, fname, rust in sorted(messages[key]):
        kind = kind_of(pkg, ty, rust)
        json = json_name(fname)
        # Go's embedded structs (`json:",inline"`, e.g. Volume.VolumeSource,
        # IngressRule.IngressRuleValue) have a proto field but no JSON name:
        # k8s-openapi flattens them, so their fields belong to the parent.
        inline = False
        if known is not None and json not in known and kind.startswith("Msg(") and label != "repeated":
            child = messages[resolve(pkg, rust)]
            inline = all(json_name(f[3]) in known for f in child)
        out.append(f"        Field {{ tag: {tag}, json: \"{json}\", kind: Kind::{kind}, repeated: {str(label == 'repeated').lower()}, inline: {str(inline).lower()} }},")
    out.append("    ] },")
out.append("];")
out.append("")
out.append("/// The message of each kind decoded from a request body.")
out.append("pub(super) static ROOTS: &[(&str, &str, usize)] = &[")
for api_version, kind, pkg in ROOTS:
    out.append(f"    (\"{api_version}\", \"{kind}\", {index[(pkg, kind)]}),")
out.append("];")
print("\n".join(out))
