// Classifies a dropped or chosen photo with a SwiftFormer .tflite file (classifier metadata and
// labels packed in, as converters.metadata writes) through MediaPipe Tasks for web, on the CPU.
// Everything is served from this page's own folder: the WASM files from node_modules, the model
// beside the page unless ?model= names another URL.
import {FilesetResolver, ImageClassifier} from
  "./node_modules/@mediapipe/tasks-vision/vision_bundle.mjs";

const params = new URLSearchParams(location.search);
const MODEL = params.get("model") || "swiftformer_xs_int8.tflite";
// The evaluation crop: the centre square of this fraction of the shorter side (MediaPipe then
// resizes it to the model's input). ?crop=1 keeps the whole centre square.
const CROP = Number(params.get("crop") || 0.875);
const TOP_K = 5;
const WASM = new URL("node_modules/@mediapipe/tasks-vision/wasm", location.href).href;

const $ = (id) => document.getElementById(id);

// What the file's metadata says (converters.metadata writes it): whether its weights are random
// and whether its scores are logits or softmax probabilities. Read from the metadata's text.
function describeModel(bytes) {
  const text = new TextDecoder("latin1").decode(bytes);
  const random = /random weights/i.test(text);
  const scores = text.includes("Softmax probabilities of the classes") ? "probabilities"
    : text.includes("Logits (unnormalised scores)") ? "logits" : "unknown";
  return {random, scores};
}

function showAbout({random, scores}) {
  const about = $("about");
  about.dataset.random = random;
  about.dataset.scores = scores;
  const kind = {
    logits: "Scores are logits (unnormalised), not probabilities: compare them, do not read " +
            "them as confidences.",
    probabilities: "Scores are softmax probabilities.",
    unknown: "The file does not say whether its scores are logits or probabilities.",
  }[scores];
  about.textContent = (random ? "This file's weights are RANDOM (converted without a " +
                       "checkpoint): its answers mean nothing. " : "") + kind;
  about.classList.toggle("warning", random);
}

function setStatus(text, state) {
  $("status").textContent = text;
  document.body.dataset.state = state;
}

function message(err) {
  return err instanceof Error ? err.message : String(err);
}

// The centre square of CROP times the shorter side, in [0, 1] image coordinates; undefined
// when that is the whole image (no crop, so a picture at the model's size is not resampled).
function centreCrop(width, height) {
  const side = Math.min(1, CROP) * Math.min(width, height);
  if (side === width && side === height) return undefined;
  const x = (width - side) / 2 / width, y = (height - side) / 2 / height;
  return {left: x, top: y, right: 1 - x, bottom: 1 - y};
}

// The picture, with the region the model sees outlined.
function showPreview(bitmap, region) {
  const canvas = $("preview");
  const scale = Math.min(1, 480 / Math.max(bitmap.width, bitmap.height));
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  if (!region) return;
  context.strokeStyle = "#fff";
  context.setLineDash([6, 4]);
  context.lineWidth = 2;
  context.strokeRect(region.left * canvas.width, region.top * canvas.height,
                     (region.right - region.left) * canvas.width,
                     (region.bottom - region.top) * canvas.height);
}

function showResult(categories, milliseconds) {
  const list = $("results");
  list.replaceChildren(...categories.map((c) => {
    const item = document.createElement("li");
    item.dataset.label = c.categoryName;
    item.dataset.index = c.index;
    item.dataset.score = c.score;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = c.categoryName.replaceAll("_", " ");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = c.score.toFixed(3);
    item.append(label, score);
    return item;
  }));
  const top = categories[0];
  $("top1").textContent = top.categoryName.replaceAll("_", " ");
  $("top1").dataset.top1 = top.categoryName;
  $("top1").dataset.index = top.index;
  $("time").textContent = `${milliseconds.toFixed(1)} ms`;
  $("time").dataset.ms = milliseconds;
}

const ready = (async () => {
  const response = await fetch(MODEL);
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  showAbout(describeModel(new Uint8Array(await response.arrayBuffer())));
  const fileset = await FilesetResolver.forVisionTasks(WASM);
  return ImageClassifier.createFromOptions(fileset, {
    baseOptions: {modelAssetPath: MODEL, delegate: "CPU"},
    runningMode: "IMAGE",
    maxResults: TOP_K,
  });
})();

// Calls of classify so far; the first one is the warm-up.
let calls = 0;

function showWarmup(milliseconds) {
  const warmup = $("warmup");
  warmup.dataset.ms = milliseconds;
  warmup.textContent = `call 1 was the warm-up (${milliseconds.toFixed(1)} ms, not counted); ` +
                       "the time shown is of the calls after it";
}

async function classify(file) {
  if (!file) return;
  try {
    const classifier = await ready;
    setStatus(`Classifying ${file.name}…`, "busy");
    // As decoded: no colour-profile conversion, so the pixels are the file's own.
    const bitmap = await createImageBitmap(file, {colorSpaceConversion: "none",
                                                  premultiplyAlpha: "none"});
    const region = centreCrop(bitmap.width, bitmap.height);
    showPreview(bitmap, region);
    const options = region && {regionOfInterest: region};
    calls += 1;
    if (calls === 1) {  // the first call sets the engine up: a warm-up, timed apart
      const warmStart = performance.now();
      classifier.classify(bitmap, options);
      showWarmup(performance.now() - warmStart);
      calls += 1;
    }
    const start = performance.now();
    const result = classifier.classify(bitmap, options);
    const milliseconds = performance.now() - start;
    $("time").dataset.call = calls;
    const categories = result.classifications[0]?.categories ?? [];
    if (!categories.length) throw new Error("the classifier returned no categories");
    showResult(categories, milliseconds);
    setStatus(`${file.name}: ${bitmap.width}×${bitmap.height}`, "done");
    bitmap.close();
  } catch (err) {
    setStatus(`Cannot classify ${file.name}: ${message(err)}`, "error");
  }
}

$("model").textContent = MODEL;
ready.then(() => setStatus("Ready: drop or choose a photo.", "ready"),
           (err) => setStatus(`Cannot load ${MODEL}: ${message(err)}`, "error"));
$("file").addEventListener("change", (event) => classify(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  classify(event.dataTransfer.files[0]);
});
window.addEventListener("unhandledrejection", (event) =>
  setStatus(`Error: ${message(event.reason)}`, "error"));
