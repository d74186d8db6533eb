/**
 * Canonical resource URIs (RFC 8707), as Gatehouse puts them in `aud`:
 * scheme and host lowercased, default port dropped, a root path (`/` or empty)
 * dropped, any other path kept exactly (trailing slash, case,
 * percent-encoding) apart from `.`/`..` segments, a non-empty query kept.
 * Fragments and user information are refused.
 */

export class InvalidResourceError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidResourceError';
  }
}

const FORBIDDEN = new Set(['"', '<', '>', '\\', '^', '`', '{', '|', '}']);

function isUriChar(ch: string): boolean {
  const c = ch.charCodeAt(0);
  return c >= 0x21 && c <= 0x7e && !FORBIDDEN.has(ch);
}

interface Parts {
  origin: string; // scheme://host[:port], port only when not the default
  path: string; // '' for a root path
  query: string; // '' or '?...'
}

function split(resource: string): Parts {
  if (typeof resource !== 'string' || resource.length === 0 || ![...resource].every(isUriChar)) {
    throw new InvalidResourceError('resource contains a character that is not allowed in a URI');
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(resource);
  if (!scheme) throw new InvalidResourceError('resource must be an absolute URI');
  if (resource.includes('#')) throw new InvalidResourceError('resource must not contain a fragment');
  const s = scheme[1]!.toLowerCase();
  if (s !== 'https' && s !== 'http') throw new InvalidResourceError('resource must be an https or http URI');
  const rest = resource.slice(scheme[0].length);
  if (!rest.startsWith('//')) throw new InvalidResourceError('resource must include a host');
  const authority = rest.slice(2).split(/[/?]/, 1)[0] ?? '';
  if (authority.length === 0) throw new InvalidResourceError('resource must include a host');
  if (authority.includes('@')) throw new InvalidResourceError('resource must not contain user information');
  let url: URL;
  try {
    url = new URL(resource);
  } catch {
    throw new InvalidResourceError('resource is not a valid URI');
  }
  if (!url.hostname) throw new InvalidResourceError('resource must include a host');
  // WHATWG URL (the same model Gatehouse's parser follows) lowercases scheme and
  // host, drops the default port and removes dot segments.
  return {
    origin: `${url.protocol}//${url.host}`,
    path: url.pathname === '/' ? '' : url.pathname,
    query: url.search.length > 1 ? url.search : '',
  };
}

/**
 * The canonical form of a resource URI. `https://MCP.example.com:443/` becomes
 * `https://mcp.example.com`; `https://h/mcp` and `https://h/mcp/` stay different.
 * Throws {@link InvalidResourceError} for anything that is not an absolute
 * http(s) URI with a host and without fragment or user information.
 */
export function canonicalizeResource(resource: string): string {
  const p = split(resource);
  return p.origin + p.path + p.query;
}

/** Whether two URIs name the same resource. Invalid URIs never do. */
export function sameResource(a: string, b: string): boolean {
  try {
    return canonicalizeResource(a) === canonicalizeResource(b);
  } catch {
    return false;
  }
}

/**
 * Where RFC 9728 §3.1 puts a resource's metadata: `/.well-known/oauth-protected-resource`
 * inserted between host and path (`https://h/mcp` gives
 * `https://h/.well-known/oauth-protected-resource/mcp`).
 */
export function resourceMetadataUrl(resource: string): string {
  const p = split(resource);
  return `${p.origin}/.well-known/oauth-protected-resource${p.path}${p.query}`;
}
