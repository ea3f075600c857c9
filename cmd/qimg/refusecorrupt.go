package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
)

// refuseCorrupt fails, before a command changes anything, on an image
// whose metadata check finds a corruption: commit (which empties the
// top after writing the base) and amend's refcount width change, which
// would turn the damage into lost data. what says what was left alone.
func refuseCorrupt(im *qcow2.Image, what string) error {
	r, err := im.Check(qcow2.CheckOptions{})
	if err != nil {
		return err
	}
	if r.Corruptions > 0 {
		return fmt.Errorf("%d errors were found on the image (qimg check): %s", r.Corruptions, what)
	}
	return nil
}
