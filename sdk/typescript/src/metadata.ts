import { canonicalizeResource } from './resource.js';

/** RFC 9728 protected resource metadata. */
export interface ProtectedResourceMetadata {
  resource: string;
  authorization_servers: string[];
  scopes_supported?: string[];
  bearer_methods_supported: string[];
  [member: string]: unknown;
}

/**
 * The RFC 9728 document to serve at `resourceMetadataUrl(resource)`.
 *
 * `resource` is published as given (RFC 9728 wants it identical to the URL the
 * metadata location was derived from), so configure it in canonical form; it
 * must be a valid resource URI. `issuer` is the Gatehouse tenant's issuer,
 * exactly. `extra` members (`resource_name`, ...) are added as they are.
 */
export function protectedResourceMetadata(
  resource: string,
  issuer: string,
  scopes: readonly string[] = [],
  extra: Record<string, unknown> = {},
): ProtectedResourceMetadata {
  canonicalizeResource(resource); // validates
  const doc: ProtectedResourceMetadata = {
    resource,
    authorization_servers: [issuer],
    bearer_methods_supported: ['header'],
  };
  if (scopes.length > 0) doc.scopes_supported = [...scopes];
  return Object.assign(doc, extra);
}

export interface ChallengeOptions {
  resourceMetadata?: string;
  error?: string;
  errorDescription?: string;
  scope?: string | readonly string[];
}

const quote = (v: string) => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/**
 * A `WWW-Authenticate` value, e.g.
 * `bearerChallenge({ resourceMetadata, error: 'insufficient_scope', scope: 'tickets:write' })`.
 */
export function bearerChallenge(opts: ChallengeOptions = {}): string {
  const params: string[] = [];
  if (opts.error) params.push(`error=${quote(opts.error)}`);
  if (opts.errorDescription) params.push(`error_description=${quote(opts.errorDescription)}`);
  if (opts.scope !== undefined) {
    const text = typeof opts.scope === 'string' ? opts.scope : opts.scope.join(' ');
    if (text) params.push(`scope=${quote(text)}`);
  }
  if (opts.resourceMetadata) params.push(`resource_metadata=${quote(opts.resourceMetadata)}`);
  return params.length ? `Bearer ${params.join(', ')}` : 'Bearer';
}
