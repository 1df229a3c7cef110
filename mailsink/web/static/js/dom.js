/* Small DOM helpers shared by every view. */

/** The first element matching a CSS selector. */
export const $ = (selector) => document.querySelector(selector);

/** Escape a value for one URL path segment or query value. */
export const enc = encodeURIComponent;

/** Build an element; strings among children become text nodes (never parsed as HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children);
  return node;
}
