package virt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// libvirt's QEMU save image (src/qemu/qemu_saveimage.h):
//
//	char     magic[16]   "LibvirtQemudSave" ("LibvirtQemudPart" while being written)
//	uint32   version     2
//	uint32   data_len    bytes of XML + cookie + zero padding that follow
//	uint32   was_running
//	uint32   format      0 raw, else compressed
//	uint32   cookieOffset offset of the cookie inside data (0: none)
//	uint32   unused[14]
//
// then data_len bytes (NUL-terminated XML, NUL-terminated cookie, zeros),
// then QEMU's migration stream. Integers are host-endian (x86: little).
// libvirt pads data with 64 KiB of zeros when it writes the image so the
// XML can be edited in place: we rewrite it within data_len.
const (
	saveMagic     = "LibvirtQemudSave"
	saveHeaderLen = 16 + 4*19
)

type saveHeader struct {
	Magic        [16]byte
	Version      uint32
	DataLen      uint32
	WasRunning   uint32
	Format       uint32
	CookieOffset uint32
	Unused       [14]uint32
}

// saveData is the editable part of a save image.
type saveData struct {
	Header saveHeader
	XML    string
	Cookie []byte // without its NUL; nil if none
}

func readSaveData(f io.Reader) (saveData, error) {
	var sd saveData
	if err := binary.Read(f, binary.LittleEndian, &sd.Header); err != nil {
		return sd, fmt.Errorf("save image header: %w", err)
	}
	if string(sd.Header.Magic[:]) != saveMagic {
		return sd, fmt.Errorf("save image: bad magic %q", sd.Header.Magic[:])
	}
	if sd.Header.Version != 2 {
		return sd, fmt.Errorf("save image: version %d (want 2)", sd.Header.Version)
	}
	if sd.Header.DataLen == 0 || sd.Header.DataLen > 16<<20 {
		return sd, fmt.Errorf("save image: data length %d", sd.Header.DataLen)
	}
	data := make([]byte, sd.Header.DataLen)
	if _, err := io.ReadFull(f, data); err != nil {
		return sd, fmt.Errorf("save image data: %w", err)
	}
	end := bytes.IndexByte(data, 0)
	if end < 0 {
		return sd, fmt.Errorf("save image: XML not terminated")
	}
	sd.XML = string(data[:end])
	if off := sd.Header.CookieOffset; off != 0 {
		if int(off) >= len(data) {
			return sd, fmt.Errorf("save image: cookie offset %d beyond data", off)
		}
		c := data[off:]
		if i := bytes.IndexByte(c, 0); i >= 0 {
			c = c[:i]
		}
		sd.Cookie = append([]byte(nil), c...)
	}
	return sd, nil
}

// ReadSaveImageXML returns the domain XML stored in a save image.
func ReadSaveImageXML(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sd, err := readSaveData(f)
	return sd.XML, err
}

// encode lays out header + data_len bytes for newXML, keeping the cookie.
func (sd saveData) encode(newXML string) ([]byte, error) {
	xmlLen := len(newXML) + 1
	need := xmlLen
	if sd.Cookie != nil {
		need += len(sd.Cookie) + 1
	}
	if need > int(sd.Header.DataLen) {
		return nil, fmt.Errorf("save image: new XML needs %d bytes, %d available", need, sd.Header.DataLen)
	}
	h := sd.Header
	h.CookieOffset = 0
	data := make([]byte, h.DataLen)
	copy(data, newXML)
	if sd.Cookie != nil {
		h.CookieOffset = uint32(xmlLen)
		copy(data[xmlLen:], sd.Cookie)
	}
	var buf bytes.Buffer
	buf.Grow(saveHeaderLen + len(data))
	if err := binary.Write(&buf, binary.LittleEndian, h); err != nil {
		return nil, err
	}
	buf.Write(data)
	return buf.Bytes(), nil
}

// RewriteSaveImageXML replaces the domain XML in a save image in place;
// the migration stream after the data block is not touched.
func RewriteSaveImageXML(path, newXML string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	sd, err := readSaveData(f)
	if err != nil {
		return err
	}
	b, err := sd.encode(newXML)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("rewrite save image: %w", err)
	}
	return f.Close()
}

// copySaveImage copies a template's save image to dst, rewriting its XML
// on the way (one pass: header and XML from memory, the stream copied).
func copySaveImage(src, dst, newXML string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open template image: %w", err)
	}
	defer in.Close()
	sd, err := readSaveData(in)
	if err != nil {
		return err
	}
	head, err := sd.encode(newXML)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create restore image: %w", err)
	}
	if _, err := out.Write(head); err != nil {
		out.Close()
		return fmt.Errorf("write restore image: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil { // copy_file_range where possible
		out.Close()
		return fmt.Errorf("copy restore image: %w", err)
	}
	return out.Close()
}
