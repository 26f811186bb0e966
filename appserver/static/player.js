"use strict";
// The watch page's player (appserver.watch): shows the video's position in #time, seeks to ?t=<seconds>
// once the metadata is in, and leaves what happened on <body data-*> for a test to read.
const video = document.querySelector("video");
const time = document.getElementById("time");
const body = document.body;
const start = Number(new URLSearchParams(location.search).get("t"));

function show() { time.textContent = video.currentTime.toFixed(2); }

video.addEventListener("timeupdate", show);
video.addEventListener("loadedmetadata", () => {
  body.dataset.duration = String(video.duration);
  show();
  if (start > 0) video.currentTime = start;
});
video.addEventListener("seeked", () => { show(); body.dataset.seeked = String(video.currentTime); });
video.addEventListener("error", () => { body.dataset.error = String(video.error && video.error.code); });
body.dataset.player = "ready";
