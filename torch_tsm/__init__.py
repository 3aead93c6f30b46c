import os

# FFmpeg's own log (e.g. "moov atom not found" for a file that is not a video) goes straight to stderr,
# ahead of the one line that names the file; it is read when OpenCV is imported, so it is set here,
# before any module of the package imports cv2. A user who wants it sets the variable (e.g. to 16).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
