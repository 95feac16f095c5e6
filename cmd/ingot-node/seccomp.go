package main

// The node links libseccomp statically now, through cgo, so the toolchain libcontainer needs
// (cgo, static glibc, cross gcc for arm64, the seccomp build tag) is proven by every build.

/*
#cgo LDFLAGS: -lseccomp
#include <seccomp.h>
*/
import "C"

import "fmt"

func seccompVersion() string {
	v := C.seccomp_version()
	return fmt.Sprintf("%d.%d.%d", v.major, v.minor, v.micro)
}
