package errdefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"google.golang.org/grpc/codes"
)

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"not found", fmt.Errorf("pod x: %w", ErrNotFound), codes.NotFound},
		{"missing file", fmt.Errorf("open: %w", os.ErrNotExist), codes.NotFound},
		{"invalid around a missing file", fmt.Errorf("%w: sub-path: %w", ErrInvalid, os.ErrNotExist), codes.InvalidArgument},
		{"exists", fmt.Errorf("name: %w", ErrAlreadyExists), codes.AlreadyExists},
		{"precondition", fmt.Errorf("pod: %w", ErrPrecondition), codes.FailedPrecondition},
		{"deadline", fmt.Errorf("exec: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{"other", errors.New("boom"), codes.Unknown},
	} {
		if got := Code(tc.err); got != tc.want {
			t.Errorf("%s: Code(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
