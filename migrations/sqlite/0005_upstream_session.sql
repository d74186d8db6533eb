-- The upstream session behind an identity (Dex keeps the same per user and
-- connector): the upstream refresh token, encrypted under the KEK, when the
-- user was last re-checked upstream, and whether the upstream refused them.
-- JSON; NULL when the upstream granted no refresh token.
ALTER TABLE identities ADD COLUMN upstream TEXT;
