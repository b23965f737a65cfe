// Package atomicfile writes a file so that a reader sees either the old
// contents or the new, never half of them: the data goes to a temporary
// file beside the target, is synced, and is renamed over it. The bridge
// writes its remote-port state this way (a reload or a restart may read it
// at any moment), and gen-cert its certificate and key.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write writes data to name with permissions perm, replacing name in one
// rename. The temporary file (".NAME.*" in name's directory) is removed
// when anything fails. Like os.WriteFile, its errors are the os package's
// (*fs.PathError, or *os.LinkError from the rename), which name the
// operation and the file: callers add what the file is for.
func Write(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	err = f.Chmod(perm) // before the data: a key is never readable by more
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
