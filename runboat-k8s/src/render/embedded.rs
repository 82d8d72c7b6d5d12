//! The default kubefiles (`kubefiles/native` at the root of the repository),
//! embedded in the binary so runboat works without any file on disk.

/// Every file of the default set: its name and content.
pub(super) const FILES: &[(&str, &str)] = &[
    ("cleanup.yaml", include_str!("../../../kubefiles/native/cleanup.yaml")),
    ("configmaps.yaml", include_str!("../../../kubefiles/native/configmaps.yaml")),
    ("deployment.yaml", include_str!("../../../kubefiles/native/deployment.yaml")),
    ("ingress.yaml", include_str!("../../../kubefiles/native/ingress.yaml")),
    ("initialize.yaml", include_str!("../../../kubefiles/native/initialize.yaml")),
    ("pvc.yaml", include_str!("../../../kubefiles/native/pvc.yaml")),
    ("runboat-cleanup.sh", include_str!("../../../kubefiles/native/runboat-cleanup.sh")),
    (
        "runboat-clone-and-install.sh",
        include_str!("../../../kubefiles/native/runboat-clone-and-install.sh"),
    ),
    ("runboat-initialize.sh", include_str!("../../../kubefiles/native/runboat-initialize.sh")),
    ("runboat-start.sh", include_str!("../../../kubefiles/native/runboat-start.sh")),
    ("secrets.yaml", include_str!("../../../kubefiles/native/secrets.yaml")),
    ("service.yaml", include_str!("../../../kubefiles/native/service.yaml")),
];
