// Click a column heading to sort its table by it (numbers by data-value), again to reverse.
document.querySelectorAll("table.sortable th").forEach((heading) => {
  heading.addEventListener("click", () => {
    const column = heading.cellIndex;
    const body = heading.closest("table").tBodies[0];
    const descending = heading.getAttribute("aria-sort") === "ascending";
    heading.closest("tr").querySelectorAll("th").forEach((other) => other.removeAttribute("aria-sort"));
    heading.setAttribute("aria-sort", descending ? "descending" : "ascending");
    const key = (row) => {
      const cell = row.cells[column];
      return cell && cell.dataset.value !== undefined ? parseFloat(cell.dataset.value) : (cell ? cell.textContent : "");
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const [x, y] = [key(a), key(b)];
      const order = typeof x === "number" && typeof y === "number" ? x - y
        : typeof x === "number" ? -1 : typeof y === "number" ? 1 : x.localeCompare(y);
      return descending ? -order : order;
    });
    body.append(...rows);
  });
});
