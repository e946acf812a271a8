package main

import (
	"errors"
	"io"

	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// openChecked is the object's opener: the spool's checked reader, its
// damage reported as the forwarder knows it.
func openChecked(d *spool.Description) (io.ReadCloser, error) {
	rc, err := d.Open()
	if err != nil {
		return nil, damageOf(err)
	}
	return damageReader{rc}, nil
}

// damaged is a spool error that is also forward.ErrDamaged: the two
// packages do not know each other, and meet here.
type damaged struct{ err error }

func (d damaged) Error() string        { return d.err.Error() }
func (d damaged) Unwrap() error        { return d.err }
func (d damaged) Is(target error) bool { return target == forward.ErrDamaged }

func damageOf(err error) error {
	if errors.Is(err, spool.ErrDamaged) {
		return damaged{err}
	}
	return err
}

type damageReader struct{ io.ReadCloser }

func (r damageReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = damageOf(err)
	}
	return n, err
}
