// The 3D view: a three.js WebGL renderer with OrbitControls, each result's GLB loaded by
// GLTFLoader, and the cameras' frustums drawn from the result's metadata. It draws only when
// something changes (a result, a camera move, a setting): an idle page then costs no CPU, which
// matters where WebGL is software-rendered.
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { axisPercentiles, frustumDepth, frustumSegments } from './geometry.js';

// COLOR_0 holds the photos' sRGB bytes as they are. three.js would take vertex colours as linear
// and brighten every point on output: all colours go through untouched instead, the page's own
// (background, frustums) included, with no conversion on output either (LinearSRGBColorSpace).
THREE.ColorManagement.enabled = false;

const BACKGROUND = 0x11151c;
const FIELD_OF_VIEW = 50; // degrees, vertical
// Frames further apart than this were not drawn back to back (the view was idle in between).
const IDLE_GAP_MS = 200;

export class Viewer {
  // onFrameRate({fps, frameMs}) is called a few times a second while the view moves.
  constructor(canvas, { onFrameRate }) {
    // preserveDrawingBuffer: screenshots (and the browser test) read the canvas between frames.
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
    this.renderer.outputColorSpace = THREE.LinearSRGBColorSpace;
    this.renderer.setPixelRatio(window.devicePixelRatio || 1);
    this.renderer.setClearColor(BACKGROUND);
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(FIELD_OF_VIEW, 1, 0.01, 1000);
    this.camera.position.set(0, 0, 3);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = true;
    this.controls.dampingFactor = 0.2; // settles in ~20 frames: few extra frames where GL is slow
    this.controls.addEventListener('change', () => this.requestRender());
    this.loader = new GLTFLoader();
    this.cloud = null;     // the loaded glTF scene: the Points
    this.frustums = null;  // LineSegments built from the metadata
    this.pointSize = 2;
    this.camerasVisible = true;
    this.onFrameRate = onFrameRate;
    this.framesDrawn = 0;
    this.framePending = false;
    this.lastFrameAt = -Infinity;
    this.lastReportAt = -Infinity;
    this.recentFrameMs = [];
    new ResizeObserver(() => this.resize()).observe(canvas);
    canvas.addEventListener('dblclick', () => this.fitView());
  }

  get hasResult() { return this.cloud !== null; }

  // Points in the shown cloud, counted from the three.js scene.
  get pointCount() {
    let n = 0;
    this.cloud?.traverse((o) => { if (o.isPoints) n += o.geometry.attributes.position.count; });
    return n;
  }

  get cameraCount() { return this.frustums ? this.frustums.geometry.attributes.position.count / 16 : 0; }

  // Shows a result (GLB bytes and its message's metadata) in place of the previous one. keepView
  // leaves the camera where the user put it: a later result of the same session is in the same
  // frame (the first camera's), so the view updates without a jump.
  async showResult(glb, metadata, { keepView }) {
    const gltf = await this.loader.parseAsync(glb, '');
    const cloud = gltf.scene;
    // The GLB's own frustum lines give way to those drawn from the metadata: one set of cameras,
    // shown whatever the session's show_cameras was.
    const glbLines = [];
    cloud.traverse((o) => { if (o.isLineSegments) glbLines.push(o); });
    for (const line of glbLines) {
      line.removeFromParent();
      disposeObject(line);
    }
    cloud.traverse((o) => { if (o.isPoints) o.material.size = this.pointSize; });

    const cameras = frustumSegments(metadata, frustumDepth(this.pointPositions(cloud)));
    let frustums = null;
    if (cameras) {
      const geometry = new THREE.BufferGeometry();
      geometry.setAttribute('position', new THREE.Float32BufferAttribute(cameras.positions, 3));
      geometry.setAttribute('color', new THREE.Float32BufferAttribute(cameras.colors, 3));
      frustums = new THREE.LineSegments(geometry, new THREE.LineBasicMaterial({ vertexColors: true }));
      frustums.visible = this.camerasVisible;
    }

    for (const old of [this.cloud, this.frustums]) {
      if (!old) continue;
      this.scene.remove(old);
      disposeObject(old);
    }
    this.cloud = cloud;
    this.frustums = frustums;
    this.scene.add(cloud);
    if (frustums) this.scene.add(frustums);
    if (!keepView) this.fitView();
    this.requestRender();
  }

  // Frames the cloud (or, without points, the cameras) from the first camera's side: the GLB's
  // frame is that camera's in glTF axes (y up, looking down -z).
  fitView() {
    const position = this.pointPositions(this.cloud);
    let box;
    if (position && position.count) {
      // The central 96 % on each axis: a few stray points far out would shrink the cloud to a dot.
      const q = axisPercentiles(position, [2, 98]);
      box = new THREE.Box3(new THREE.Vector3(q[0][0], q[1][0], q[2][0]), new THREE.Vector3(q[0][1], q[1][1], q[2][1]));
    } else if (this.frustums) {
      box = new THREE.Box3().setFromObject(this.frustums);
    } else {
      return;
    }
    const centre = box.getCenter(new THREE.Vector3());
    const radius = Math.max(1e-6, box.getSize(new THREE.Vector3()).length() / 2);
    // Far enough for a sphere of that radius to fit the narrower of the two fields of view.
    const vertical = THREE.MathUtils.degToRad(this.camera.fov);
    const horizontal = 2 * Math.atan(Math.tan(vertical / 2) * this.camera.aspect);
    const distance = radius / Math.sin(Math.min(vertical, horizontal) / 2);
    const elevation = 0.15; // radians: a little from above shows depth better than head-on
    this.stopMotion(); // or what damping still owes would carry the new view away
    this.controls.target.copy(centre);
    this.camera.position.copy(centre).add(new THREE.Vector3(0, Math.sin(elevation), Math.cos(elevation)).multiplyScalar(distance));
    this.camera.near = distance / 1000;
    this.camera.far = distance * 100;
    this.camera.updateProjectionMatrix();
    this.controls.maxDistance = distance * 20;
    this.controls.update();
    this.requestRender();
  }

  setPointSize(pixels) {
    this.pointSize = pixels;
    this.cloud?.traverse((o) => { if (o.isPoints) o.material.size = pixels; });
    this.requestRender();
  }

  setCamerasVisible(visible) {
    this.camerasVisible = visible;
    if (this.frustums) this.frustums.visible = visible;
    this.requestRender();
  }

  // The view as a PNG Blob, drawn afresh so it shows the current state.
  screenshot() {
    this.renderer.render(this.scene, this.camera);
    return new Promise((resolve, reject) => {
      this.renderer.domElement.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('the canvas gave no image'))), 'image/png');
    });
  }

  requestRender() {
    if (this.framePending) return;
    this.framePending = true;
    requestAnimationFrame((now) => this.drawFrame(now));
  }

  drawFrame(now) {
    this.framePending = false;
    // Applies damping (and OrbitControls' autoRotate); while the view still moves, its 'change'
    // event asks for the next frame. Once the steps fall below OrbitControls' threshold the
    // view stops, with a residue left: spent now, so that no later frame (a new result) nudges it.
    if (!this.controls.update()) this.stopMotion();
    this.renderer.render(this.scene, this.camera);
    this.framesDrawn += 1;
    this.measure(now);
  }

  // The median interval of the last 30 frames drawn back to back, reported every 250 ms.
  measure(now) {
    const gap = now - this.lastFrameAt;
    this.lastFrameAt = now;
    if (gap >= IDLE_GAP_MS) return;
    this.recentFrameMs.push(gap);
    if (this.recentFrameMs.length > 30) this.recentFrameMs.shift();
    if (now - this.lastReportAt < 250 || this.recentFrameMs.length < 5) return;
    this.lastReportAt = now;
    const sorted = [...this.recentFrameMs].sort((a, b) => a - b);
    const frameMs = sorted[sorted.length >> 1];
    this.onFrameRate({ fps: 1000 / frameMs, frameMs });
  }

  // Applies the rest of the damped motion at once, leaving the controls still.
  stopMotion() {
    this.controls.enableDamping = false;
    this.controls.update();
    this.controls.enableDamping = true;
  }

  resize() {
    const canvas = this.renderer.domElement;
    const width = Math.max(1, canvas.clientWidth), height = Math.max(1, canvas.clientHeight);
    this.renderer.setSize(width, height, false); // false: the stylesheet sizes the canvas
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.requestRender();
  }

  pointPositions(cloud) {
    let position = null;
    cloud?.traverse((o) => { if (o.isPoints && !position) position = o.geometry.attributes.position; });
    return position;
  }
}

// Frees an object's GPU buffers and materials (a result replaced by the next one).
function disposeObject(root) {
  root.traverse((o) => {
    o.geometry?.dispose();
    o.material?.dispose();
  });
}
