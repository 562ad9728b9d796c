"""Photo uploaders (Predict, Augmentation lab): image types only, a size per photo and a number per page.

Streamlit allows server.maxUploadSize (200 MB, for the owner's dataset archives) per file, any type, any
count, and the page decodes what it is given. The uploader refuses other types (Streamlit checks the extension
on the server) and larger photos (in the browser only: a hand-made request is held to server.maxUploadSize
alone), so sizes are checked again here before anything is decoded, and one page answers MAX_PHOTOS at most.
"""

from __future__ import annotations

import streamlit as st

from carclf.images import IMAGE_EXTENSIONS

# File types the photo uploaders accept (decoding is by content: a PNG named .jpg still works).
PHOTO_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
# Largest photo accepted, MB: a 64 MP JPEG at high quality (the pixel limit of carclf.images) is ~40 MB.
MAX_PHOTO_MB = 50
# Photos one Predict page answers at once; more belong to `python -m carclf submit` or an evaluation.
MAX_PHOTOS = 100


def photo_uploader(label: str, key: str, multiple: bool = False, container=st, help: str | None = None):
    """``st.file_uploader`` limited to photos of at most MAX_PHOTO_MB; returns the accepted uploads as a list
    (several refused ones are each named in one line)."""
    uploads = container.file_uploader(label, type=PHOTO_TYPES, accept_multiple_files=multiple, key=key,
                                      max_upload_size=MAX_PHOTO_MB, help=help)
    uploads = list(uploads or []) if multiple else ([uploads] if uploads is not None else [])
    accepted = []
    for upload in uploads:
        if upload.size > MAX_PHOTO_MB * 1_000_000:
            container.error(f"{upload.name}: {upload.size / 1e6:.0f} MB, more than the {MAX_PHOTO_MB} MB a photo "
                            "may have here. Resize it first.", icon=":material/error:")
        else:
            accepted.append(upload)
    if len(accepted) > MAX_PHOTOS:
        container.warning(f"{len(accepted)} photos: this page answers the first {MAX_PHOTOS}. For a whole "
                          "folder use `python -m carclf submit` or the Evaluate page.", icon=":material/warning:")
        accepted = accepted[:MAX_PHOTOS]
    return accepted
