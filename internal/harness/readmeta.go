package harness

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ReadFileMeta reads the file meta group of a Part 10 file. A raw data set
// (no "DICM") gives an empty FileMeta and no error.
func ReadFileMeta(path string) (FileMeta, error) {
	fm, _, err := readMetaFile(path)
	return fm, err
}

// DataSetOffset returns where the data set starts in a DICOM file: after
// the preamble, "DICM" and the file meta group when there are any (PS3.10
// 7.1), else 0 (a raw data set).
func DataSetOffset(path string) (int64, error) {
	_, off, err := readMetaFile(path)
	return off, err
}

// DataSet returns the data set bytes of a DICOM file (see DataSetOffset).
func DataSet(path string) ([]byte, error) {
	off, err := DataSetOffset(path)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return b[off:], nil
}

// ParsePart10 splits a DICOM file held in memory (a Part 10 file, or a
// raw data set) into what its file meta group says and its data set.
func ParsePart10(b []byte) (FileMeta, []byte, error) {
	fm, off, err := readMeta(bytes.NewReader(b))
	if err != nil {
		return fm, nil, err
	}
	return fm, b[off:], nil
}

func readMetaFile(path string) (FileMeta, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileMeta{}, 0, err
	}
	defer f.Close()
	fm, off, err := readMeta(f)
	if err != nil {
		err = fmt.Errorf("%s: %w", path, err)
	}
	return fm, off, err
}

// readMeta walks the file meta group element by element, rather than
// trusting (0002,0000), which some files lack, and returns what it says
// and the offset of the first element after it.
func readMeta(r io.ReaderAt) (FileMeta, int64, error) {
	var fm FileMeta
	head := make([]byte, 132)
	if _, err := r.ReadAt(head, 0); err != nil || string(head[128:]) != "DICM" {
		return fm, 0, nil
	}
	off := int64(132)
	hdr := make([]byte, 12)
	for {
		if n, err := r.ReadAt(hdr[:8], off); n == 0 && errors.Is(err, io.EOF) {
			return fm, off, nil // a meta group and an empty data set
		} else if err != nil {
			return fm, 0, fmt.Errorf("element header at %d: %w", off, err)
		}
		if binary.LittleEndian.Uint16(hdr) != 0x0002 {
			return fm, off, nil
		}
		elem := binary.LittleEndian.Uint16(hdr[2:])
		size, n := int64(8), int64(binary.LittleEndian.Uint16(hdr[6:]))
		if longVR(string(hdr[4:6])) {
			if _, err := r.ReadAt(hdr, off); err != nil {
				return fm, 0, fmt.Errorf("element header at %d: %w", off, err)
			}
			size, n = 12, int64(binary.LittleEndian.Uint32(hdr[8:]))
		}
		var dst *string
		switch elem {
		case 0x0002:
			dst = &fm.MediaStorageSOPClassUID
		case 0x0003:
			dst = &fm.MediaStorageSOPInstanceUID
		case 0x0010:
			dst = &fm.TransferSyntaxUID
		case 0x0012:
			dst = &fm.ImplementationClassUID
		case 0x0013:
			dst = &fm.ImplementationVersionName
		case 0x0016:
			dst = &fm.SourceAETitle
		}
		if dst != nil && n <= 1024 {
			v := make([]byte, n)
			if _, err := r.ReadAt(v, off+size); err != nil {
				return fm, 0, fmt.Errorf("meta element (0002,%04X) overruns the file: %w", elem, err)
			}
			*dst = strings.TrimRight(string(v), "\x00 ")
		}
		off += size + n
	}
}
