package profiles

import "ingot.dev/ingot/internal/tomlpos"

// Error is a problem with a profile, rendered on one line as "file:line: key: message", e.g.
//
//	dev.toml:12: service[1].restart: invalid value "sometimes" (want always, on-failure or never)
//
// Empty parts are left out: errors from Validate have no File or Line, and syntax errors may have
// no Key. It is tomlpos.Error, shared with the other TOML files ingot reads (node.toml).
type Error = tomlpos.Error
