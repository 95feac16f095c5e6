package apiv1

import (
	"crypto/x509"
	"fmt"
)

// RoleOf is the role a verified client certificate carries, or an error when it carries none or
// several: a certificate that does not say exactly one known role gets none.
func RoleOf(cert *x509.Certificate) (string, error) {
	if len(cert.Subject.Organization) != 1 {
		return "", fmt.Errorf("client %q: its certificate names %d roles (Organization), want one", cert.Subject.CommonName, len(cert.Subject.Organization))
	}
	switch r := cert.Subject.Organization[0]; r {
	case RoleAdmin, RoleReader:
		return r, nil
	default:
		return "", fmt.Errorf("client %q: role %q is neither %s nor %s", cert.Subject.CommonName, r, RoleAdmin, RoleReader)
	}
}
