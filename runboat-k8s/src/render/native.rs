//! Native kubefiles: render each YAML template in-process, split it into documents,
//! keep those of the mode.

use serde_json::Value;

use runboat_core::KubefilesMode;

use super::context::RenderContext;
use super::{Kubefiles, parse_documents, stamp};
use crate::error::{Error, Result};

/// Objects without a `runboat/modes` annotation belong to mode `deployment` only.
const DEFAULT_MODES: &[KubefilesMode] = &[KubefilesMode::Deployment];

pub(super) fn render(kubefiles: &Kubefiles, ctx: &RenderContext) -> Result<Vec<Value>> {
    let vars = minijinja::Value::from(minijinja::value::Serde(ctx));
    let mut objects = Vec::new();
    for path in &kubefiles.templates {
        let text = kubefiles.render_template(path, &vars, ctx)?;
        for mut document in parse_documents(&text, path, ctx)? {
            if !document.is_object() {
                return Err(Error::InvalidObject {
                    file: path.clone(),
                    reason: "a document is not a mapping".into(),
                });
            }
            if stamp::keep_for_mode(&mut document, ctx.mode, Some(DEFAULT_MODES), path)? {
                stamp::stamp(&mut document, ctx, path)?;
                objects.push(document);
            }
        }
    }
    stamp::finish(objects, ctx.mode)
}
