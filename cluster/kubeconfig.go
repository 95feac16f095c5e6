package cluster

import (
	"encoding/base64"
	"fmt"
)

// Kubeconfig renders a kubeconfig for user at server, trusting caPEM, with a client
// certificate. It is written by hand (a fixed shape, base64 data) rather than through
// client-go's types, which ingot does not import.
func Kubeconfig(server string, caPEM []byte, user string, certPEM, keyPEM []byte) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: ingot
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: ingot
  context:
    cluster: ingot
    user: %s
current-context: ingot
`, server, b64(caPEM), user, b64(certPEM), b64(keyPEM), user)
}
