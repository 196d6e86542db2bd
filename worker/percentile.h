/* numpy.percentile / numpy.median on float data by selection, not sorting: O(n) on the
 * millions of values fusion ranks per request. Large inputs go through one 16-bit radix
 * histogram pass that narrows each wanted rank to a small bucket, then quickselect inside it. */
#ifndef DA3_PERCENTILE_H
#define DA3_PERCENTILE_H

#include <stddef.h>

#define PCT_MAX 8 /* most percentiles (or ranks) one call can ask for */

/* numpy's 'linear' interpolation differs in one rounding step with the array's dtype: for a
 * float32 array the two neighbouring order statistics are subtracted in float32, for a float64
 * array in double. Pick the dtype the reference computation had. */
typedef enum { PCT_LIKE_FLOAT32 = 0, PCT_LIKE_FLOAT64 = 1 } pct_dtype;

/* Moves the k-th smallest of a[0..n) to a[k], with a[0..k) <= a[k] <= a[k+1..n). No NaNs. */
void pct_select_kth(float *a, size_t n, size_t k);

/* out[i] = the ranks[i]-th smallest (0-based, < n) of the n values a[0], a[stride], a[2*stride]...
 * count <= PCT_MAX. a is not modified; scratch holds n floats. Returns 0, 1 if the values
 * contain a NaN (out is then not filled), or -1 when out of memory. */
int pct_order_statistics(const float *a, size_t n, size_t stride, const size_t *ranks,
                         size_t count, float *scratch, float *out);

/* out[i] = numpy.percentile(values, p[i]) (default method 'linear') for i < count <= PCT_MAX/2, p in
 * any order, each in [0,100], over n >= 1 strided values as above (infinities behave as in numpy;
 * any NaN makes every result NaN, as numpy). Returns 0, or -1 when out of memory. */
int pct_percentiles(const float *a, size_t n, size_t stride, const double *p, size_t count,
                    pct_dtype dtype, float *scratch, double *out);

/* *out = numpy.median of n >= 1 strided values (even n: mean of the two middles, in double as
 * numpy does for float64 data; NaN if any value is NaN). Returns 0, or -1 when out of memory. */
int pct_median(const float *a, size_t n, size_t stride, float *scratch, double *out);

#endif
