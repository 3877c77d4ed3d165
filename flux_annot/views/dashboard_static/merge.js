/* flux-annot: the annotation merge of docs/data-model.md, in the browser.
 *
 * merge(tree, patch) -> new tree or null
 *   tree: an object (already pruned) or null; patch: an object. Neither is
 *   modified. For each key of the patch: null deletes the key; an object
 *   merges into the existing object (or into an empty one when the existing
 *   value is missing or not an object); any other value (string, number,
 *   boolean, array) replaces. Objects left empty are removed, up to the
 *   root: an empty result is null ("no annotations").
 *
 * Objects built here have no prototype, so a key such as "__proto__" is an
 * ordinary key (a memo cannot change how the page's objects behave).
 * JavaScript keeps insertion order for keys, except that integer-like keys
 * ("1", "42") come first; JSON equality does not depend on order.
 */
(function (root) {
  "use strict";
  var hasOwn = Object.prototype.hasOwnProperty;

  function isObject(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v);
  }

  function merge(tree, patch) {
    var out = Object.create(null);
    var key;
    if (isObject(tree)) {
      for (key in tree) {
        if (hasOwn.call(tree, key)) out[key] = tree[key];
      }
    }
    for (key in patch) {
      if (!hasOwn.call(patch, key)) continue;
      var value = patch[key];
      if (value === null) {
        delete out[key];
      } else if (isObject(value)) {
        var old = hasOwn.call(out, key) ? out[key] : null;
        var merged = merge(isObject(old) ? old : null, value);
        if (merged === null) delete out[key];
        else out[key] = merged;
      } else {
        out[key] = value;
      }
    }
    for (key in out) return out;
    return null;
  }

  /* Apply one delta entry's patch to a job's annotations (null patch: none left). */
  function applyDelta(tree, patch) {
    if (!isObject(patch)) return null;
    return merge(tree, patch);
  }

  root.FluxMerge = { merge: merge, applyDelta: applyDelta, isObject: isObject };
})(typeof window !== "undefined" ? window : globalThis);
