/* The console's diagrams: bpmn-js draws the BPMN file the server names (laid out by bpmn-auto-layout when the file
 * has no diagram interchange for the process), then each element the instance has reached gets the class
 * spiff-<marker> on its g[data-element-id]. A call activity that has run opens the called process's diagram. */
(function () {
  'use strict';

  function drawsProcess(element, processId) {
    if (!element) { return false; }
    if (element.id === processId) { return true; }
    return (element.participants || []).some(function (p) { return p.processRef && p.processRef.id === processId; });
  }

  function hasDiagramFor(xml, processId) {
    var doc = new DOMParser().parseFromString(xml, 'application/xml');
    var drawn = {};
    ['BPMNPlane', 'BPMNShape'].forEach(function (tag) {
      Array.prototype.forEach.call(doc.getElementsByTagNameNS('*', tag), function (node) {
        drawn[node.getAttribute('bpmnElement')] = true;
      });
    });
    if (drawn[processId]) { return true; }
    return Array.prototype.some.call(doc.getElementsByTagNameNS('*', 'participant'), function (p) {
      return p.getAttribute('processRef') === processId && drawn[p.getAttribute('id')];
    });
  }

  function json(id) {
    var node = id && document.getElementById(id);
    return node ? JSON.parse(node.textContent) : [];
  }

  function fail(container, why) {
    container.classList.add('diagram-failed');
    container.setAttribute('data-state', 'failed');
    container.textContent = 'The diagram could not be drawn: ' + why;
  }

  async function draw(container) {
    var processId = container.getAttribute('data-process');
    var marks = json(container.getAttribute('data-marks'));
    var calls = json(container.getAttribute('data-calls'));
    var response = await fetch(container.getAttribute('data-diagram'), {credentials: 'same-origin'});
    if (!response.ok) { return fail(container, 'the server answered ' + response.status); }
    var xml = await response.text();
    var laidOut = false;
    if (!hasDiagramFor(xml, processId)) {
      xml = await window.BpmnAutoLayout.layoutProcess(xml);
      laidOut = true;
    }
    var viewer = new window.BpmnJS({container: container});
    await viewer.importXML(xml);
    var diagrams = viewer.getDefinitions().diagrams || [];
    var wanted = diagrams.filter(function (d) { return d.plane && drawsProcess(d.plane.bpmnElement, processId); })[0];
    if (wanted && diagrams.length > 1) { await viewer.open(wanted); }
    var canvas = viewer.get('canvas');
    var registry = viewer.get('elementRegistry');
    marks.forEach(function (mark) {
      if (registry.get(mark.element_id)) { canvas.addMarker(mark.element_id, 'spiff-' + mark.marker); }
    });
    var links = {};
    calls.forEach(function (call) {
      var link = document.querySelector('a.call[data-element="' + CSS.escape(call.element_id) + '"]');
      if (link) { links[call.element_id] = link.href; canvas.addMarker(call.element_id, 'spiff-drill'); }
    });
    viewer.get('eventBus').on('element.click', function (event) {
      if (links[event.element.id]) { window.location.href = links[event.element.id]; }
    });
    canvas.zoom('fit-viewport', 'auto');
    container.setAttribute('data-state', laidOut ? 'laid-out' : 'drawn');
  }

  document.addEventListener('DOMContentLoaded', function () {
    Array.prototype.forEach.call(document.querySelectorAll('.diagram[data-diagram]'), function (container) {
      draw(container).catch(function (error) { fail(container, error && error.message ? error.message : error); });
    });
  });
}());
